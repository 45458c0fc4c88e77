# The streamscore worker image (used by docker-compose.yml).
# torch>=2.3 from PyPI is the CUDA build on Linux x86_64 (large); to make a CPU-only image,
# install a CPU torch wheel before `pip install .`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY features ./features
COPY models ./models
COPY benchmarks ./benchmarks
RUN pip install .
RUN useradd --system --uid 10001 streamscore && mkdir -p /app/var && chown streamscore /app/var
USER streamscore
EXPOSE 6066
ENTRYPOINT ["streamscore"]
CMD ["worker"]
