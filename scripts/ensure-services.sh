#!/usr/bin/env bash
# Start RabbitMQ, Redis and PostgreSQL on localhost if they are installed but not running.
# Never stops or reconfigures a running service. Uses this machine kind's own start commands.
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port name seconds
  for _ in $(seq 1 "$3"); do listening "$1" && return 0; sleep 1; done
  echo "ensure-services: $2 did not come up on port $1" >&2
  return 1
}

if ! listening 6379 && command -v redis-server >/dev/null; then
  echo "ensure-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis 30
fi
if ! listening 5432 && command -v pg_ctlcluster >/dev/null; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_for 5432 PostgreSQL 60
fi
if ! listening 5672 && command -v rabbitmq-server >/dev/null; then
  echo "ensure-services: starting RabbitMQ"
  rabbitmq-server -detached
  wait_for 5672 RabbitMQ 120
fi
for port in 6379 5432 5672; do
  listening "$port" || { echo "ensure-services: nothing listens on 127.0.0.1:$port" >&2; exit 1; }
done
