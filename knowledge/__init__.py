"""Knowledge patterns: registry, template rendering, Copilot export and the built-in library (to come)."""
