#!/usr/bin/env bash
# Make sure a Redis server answers on 127.0.0.1:6379, installing and starting it if needed.
set -euo pipefail
port="${REDIS_PORT:-6379}"
ping() { (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
ping && exit 0
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it from Debian's packages" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
mkdir -p /tmp/labelbridge-redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir /tmp/labelbridge-redis --logfile /tmp/labelbridge-redis/redis.log
for _ in $(seq 1 50); do ping && exit 0; sleep 0.1; done
echo "Redis did not start on 127.0.0.1:$port (see /tmp/labelbridge-redis/redis.log)" >&2
exit 1
