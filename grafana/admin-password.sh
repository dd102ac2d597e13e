#!/bin/sh
# Writes Grafana's admin password to $SECRET_DIR/admin_password before Grafana starts, so it is never Grafana's
# default: GRAFANA_ADMIN_PASSWORD when set, else the one generated on the first start (printed once, then kept).
set -eu
umask 077
file="${SECRET_DIR:-/run/grafana-secret}/admin_password"
if [ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
  if [ "$GRAFANA_ADMIN_PASSWORD" = admin ]; then
    echo "grafana-password: GRAFANA_ADMIN_PASSWORD must not be Grafana's default 'admin'" >&2
    exit 1
  fi
  printf '%s' "$GRAFANA_ADMIN_PASSWORD" > "$file.new"
  mv -f "$file.new" "$file"
  echo "grafana-password: using GRAFANA_ADMIN_PASSWORD"
elif [ ! -s "$file" ]; then
  head -c 18 /dev/urandom | base64 | tr -d '/+=\n' > "$file.new"
  mv -f "$file.new" "$file"
  echo "grafana-password: generated the admin password (user admin): $(cat "$file")"
  echo "grafana-password: it is kept in the grafana-secret volume; set GRAFANA_ADMIN_PASSWORD to choose your own"
else
  echo "grafana-password: keeping the admin password generated on the first start"
fi
chmod 0440 "$file"
chown "${GRAFANA_UID:-472}:0" "$file" 2>/dev/null || true
