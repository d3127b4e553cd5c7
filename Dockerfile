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
# Editable, so that the code runs from /app and finds the migrations in /app/sql (a plain install
# would look for them next to site-packages).
RUN pip install --no-cache-dir -c constraints.txt -e .
ENV LIQ_METRICS_HOST=0.0.0.0 LIQ_DATA_DIR=/data
ENTRYPOINT ["liq"]
