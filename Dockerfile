# The default harness session image: a small Debian with the tools coding
# agents and test suites expect. Built by `harness image build` (harness/images.py).
#
# BASE is debian:bookworm-slim when a registry is reachable; offline, harness
# builds an equivalent base with debootstrap (images/build-base.sh) and passes
# BASE=localhost/harness-base:bookworm. Nothing here may depend on which one.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

LABEL org.opencontainers.image.title="harness-session" \
      org.opencontainers.image.description="Default session image for harness: disposable sandboxes for coding agents" \
      io.harness.image="session"

# One layer, no recommends, apt lists removed: the image stays small and a
# rebuild with an unchanged Dockerfile is a pure cache hit.
# - DEBIAN_FRONTEND is an ARG, not ENV, so it does not leak into sessions.
# - nodejs/npm: agents such as Claude Code and Codex are npm packages.
# - netbase: /etc/protocols and /etc/services, which getaddrinfo and many
#   language runtimes read; minbase (debootstrap) lacks it.
# - ca-certificates: TLS for git, curl, pip and npm.
# - the user is created with fixed ids so files it writes in a workspace map
#   predictably; harness still chooses the uid per session.
ARG DEBIAN_FRONTEND=noninteractive
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        bash coreutils findutils grep sed gawk diffutils patch less file \
        procps util-linux iproute2 netbase \
        git openssh-client curl ca-certificates \
        python3 python3-venv python3-pip \
        nodejs npm \
        jq ripgrep make unzip xz-utils; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log; \
    groupadd --gid 1000 harness; \
    useradd --uid 1000 --gid 1000 --create-home --home-dir /home/harness \
        --shell /bin/bash harness

ENV HOME=/home/harness \
    LANG=C.UTF-8

# No ENTRYPOINT: harness runs its own command (or an idle keeper) directly.
CMD ["bash"]
