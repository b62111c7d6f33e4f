"""Operations: summaries of the call records (:mod:`.summary`), latency histograms (:mod:`.histogram`), incidents
and automated responses (:mod:`.incidents`), charts (:mod:`.charts`), the monitoring report (:mod:`.monitoring`)
and OpenTelemetry (:mod:`.telemetry`).
"""
