#!/usr/bin/env bash
# Install gpumesh's systemd units (run as root): deploy/systemd/install.sh [GPUMESH_EXECUTABLE]
# The executable defaults to the one on PATH (e.g. /opt/gpumesh/.venv/bin/gpumesh). Creates
# /etc/gpumesh/{worker,watchtower}.env templates when missing; the keystore password files
# (/etc/gpumesh/{worker,watchtower}.password, mode 0600) are yours to write.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exe="${1:-$(command -v gpumesh || true)}"
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
  echo "install.sh: no gpumesh executable (give its path: install.sh /opt/gpumesh/.venv/bin/gpumesh)" >&2
  exit 2
fi
unit_dir="${UNIT_DIR:-/etc/systemd/system}"
conf_dir="${CONF_DIR:-/etc/gpumesh}"
install -d -m 0755 "$unit_dir"
install -d -m 0750 "$conf_dir"
for role in worker watchtower; do
  sed "s#@GPUMESH@#${exe}#g" "$here/gpumesh-$role.service" > "$unit_dir/gpumesh-$role.service"
  chmod 0644 "$unit_dir/gpumesh-$role.service"
  if [ ! -e "$conf_dir/$role.env" ]; then
    cat > "$conf_dir/$role.env" <<ENV
# gpumesh $role settings (GPUMESH_* variables; see docs/roles/$role.md and README "Configuration")
ACCOUNT=/etc/gpumesh/$role.keystore.json
GPUMESH_RPC_URL=http://127.0.0.1:8545
GPUMESH_IPFS_API=/ip4/127.0.0.1/tcp/5001
ENV
    chmod 0640 "$conf_dir/$role.env"
  fi
done
echo "installed gpumesh-worker.service and gpumesh-watchtower.service in $unit_dir (gpumesh: $exe)"
echo "next: put the keystore and its password in $conf_dir, then: systemctl daemon-reload && systemctl enable --now gpumesh-worker"
