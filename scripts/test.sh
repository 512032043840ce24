#!/usr/bin/env bash
# The whole test suite, as the README names it and .ci/run calls it.
# Installs what the integration tests need (OpenSSH's sshd and client, procps, passwd, nats-server) when missing
# and we are root; otherwise says how to install it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v scp >/dev/null 2>&1 || need+=(openssh-client)
# kill and pkill signal the bridge and the remote imsg in the restart and soak tests.
command -v pkill >/dev/null 2>&1 || need+=(procps)
# openssl makes the CA and certificates of the NATS TLS test.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# useradd creates the unprivileged login of the permission tests.
command -v useradd >/dev/null 2>&1 || need+=(passwd)
# nats-server (with JetStream) backs the NATS sink and example worker tests (tests/it/natsd.rs).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} for the integration tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "the integration tests need ${need[*]}: install it (e.g. 'sudo apt-get install ${need[*]}') and run again" >&2
    exit 2
  fi
fi

# Root sshd needs its privilege separation directory; Debian only creates it when the service runs.
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd

cargo test --all-targets "$@"
