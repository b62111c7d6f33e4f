#!/usr/bin/env bash
# Install Debian's PostgreSQL server and nginx, which the team-deployment tests (tests/integration/team/) start
# themselves: a throwaway cluster (initdb + pg_ctl on a free loopback port) and nginx with a generated config;
# and e2fsprogs (mkfs.ext4, e2fsck) with mount (losetup), for the storage-fault tests' small loop file system
# (tests/integration/test_store_faults.py).
# Idempotent: does nothing when both are installed. Installing needs root (no sudo: CI runs as root).
# Daemons are not started by the install (a policy-rc.d answering 101, Debian's documented switch, is in place
# for the duration when none exists): the tests run their own instances on free ports.
set -euo pipefail

need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
[[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v mkfs.ext4 >/dev/null && command -v e2fsck >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
if ((${#need[@]} == 0)); then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "install-services.sh: ${need[*]} missing and not root; install them with apt-get as root" >&2
    exit 1
fi
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
fi
trap '[[ $made_policy == 1 ]] && rm -f "$policy"' EXIT
apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >&2
