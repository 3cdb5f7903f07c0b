#!/usr/bin/env bash
# Issue 10's transport benchmark: 1 GiB through Tidepool's agent-to-agent TLS stream path
# versus `ssh -c aes128-gcm@openssh.com` on loopback, side by side (host only, no VM).
# Installs Debian's openssh-server (for a throwaway sshd on 127.0.0.1) when it is missing;
# starts the test control plane (built and cached by tests/control-plane/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends openssh-server openssh-client ||
    { apt-get update && apt-get install -y --no-install-recommends openssh-server openssh-client; }
fi

exec cargo run --release -q -p tidepool-tests --bin bench-transport -- "$@"
