FROM python:3.11-slim
WORKDIR /srv/jetty
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY runbooks runbooks
COPY sandboxes sandboxes
COPY routines routines
COPY webhooks webhooks
RUN pip install --no-cache-dir .
ENV LITELLM_LOCAL_MODEL_COST_MAP=True
EXPOSE 8000
CMD ["jetty", "serve", "--host", "0.0.0.0"]
