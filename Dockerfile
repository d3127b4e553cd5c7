# One image for every process; the command picks the job (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY shared shared
COPY collectors collectors
COPY detector detector
COPY aggregator aggregator
COPY writer writer
COPY sql sql
# A plain install: the wheel carries the migrations (the repository's sql/ as writer/sql).
RUN pip install --no-cache-dir -c constraints.txt .
ENV LIQ_METRICS_HOST=0.0.0.0 LIQ_DATA_DIR=/data
ENTRYPOINT ["liq"]
