# The anypu image: the scheduler and the agent (`anypu scheduler`, `anypu agent`), as
# deploy/kubernetes runs them. CPU torch by default; for NVIDIA nodes build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# (not built on the machine this was written on: it has no Docker engine).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /opt/anypu
COPY pyproject.toml constraints.txt README.md ./
COPY anypu anypu
COPY agents agents
COPY comm comm
COPY devices devices
COPY placement placement
COPY protos protos
COPY scheduler scheduler
COPY sdk sdk
COPY simulations simulations
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install -c constraints.txt '.[nvidia,kubernetes]'

RUN useradd --uid 10001 --no-create-home anypu && mkdir -p /var/lib/anypu /var/cache/anypu \
 && chown anypu /var/lib/anypu /var/cache/anypu
USER 10001
ENTRYPOINT ["anypu"]
CMD ["--help"]
