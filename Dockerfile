# kubetrail as a container: `kubetrail serve` by default (see deploy/kubernetes/).
FROM python:3.11-slim
WORKDIR /opt/kubetrail
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install --no-cache-dir --constraint constraints.txt . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin kubetrail
USER 10001
ENV KUBETRAIL_DATA_DIR=/data
ENTRYPOINT ["kubetrail"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8443"]
