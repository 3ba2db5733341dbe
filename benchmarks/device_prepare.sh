#!/usr/bin/env bash
# What a lent GPU machine needs from here (it has no network), in gitignored folders its calls carry:
#   .whl/             the packages distgan needs that its image lacks (webdataset, omegaconf, wandb and what they
#                     pull in), at the versions this checkout's .venv tests with, for the device's Python
#   data/mnist-idx/   MNIST's four IDX files (from MNIST_FROM, default ../shared/data/mnist) for the quality part
# benchmarks/device_run.sh installs and uses them there; docs/benchmarks.md, "GPU", has the device calls.
# IMAGE: what the device image already holds (the device tool's KINDS.md, "Python packages already there",
# read 2026-11-17): those are not fetched, so the device's own torch, accelerate and numpy stay in charge.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DISTGAN_VENV:-.venv}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
IMAGE=${IMAGE:-absl-py,accelerate,aiofiles,aiohappyeyeballs,aiohttp,aiosignal,annotated-doc,anyio,attrs,botorch,\
build,certifi,charset-normalizer,chex,click,cloudpickle,cmake,colorama,contourpy,coverage,cuda-bindings,\
cuda-core,cuda-pathfinder,cuda-toolkit,cupy-cuda13x,cycler,cython,diffrax,e3nn,einops,equinox,etils,execnet,\
filelock,flatbuffers,flax,fonttools,formulaic,frozenlist,fsspec,gpytorch,grpcio,h11,h5py,hf-xet,httpcore,httpx,\
huggingface-hub,humanize,hypothesis,idna,imageio,iniconfig,interface-meta,jax,jaxlib,jaxtyping,jinja2,joblib,\
kiwisolver,lazy-loader,lightning,lightning-utilities,linear-operator,lineax,llvmlite,lxml,markdown,\
markdown-it-py,markupsafe,matplotlib,mdurl,meson,ml-dtypes,mpi4py,mpmath,msgpack,multidict,multipledispatch,\
mypy-extensions,nanobind,narwhals,networkx,ninja,numba,numba-cuda,numpy,numpyro,nvidia-ml-py,onnx,onnx-ir,\
onnxruntime,onnxscript,opencv-python-headless,optax,opt-einsum,opt-einsum-fx,optimistix,orbax-checkpoint,\
packaging,pandas,pathspec,patsy,peft,pillow,pip,pluggy,portalocker,prometheus-client,propcache,protobuf,psutil,\
pyarrow,pybind11,py-cpuinfo,pygments,pyparsing,pyproject-hooks,pyre-extensions,pytest,pytest-benchmark,\
pytest-cov,pytest-mock,pytest-timeout,pytest-xdist,python-dateutil,pytorch-lightning,pyyaml,regex,requests,rich,\
sacrebleu,safetensors,scikit-build-core,scikit-image,scikit-learn,scipy,seaborn,sentencepiece,\
sentence-transformers,setuptools,shellingham,simplejson,six,sortedcontainers,statsmodels,sympy,tabulate,\
tensorboard,tensorboard-data-server,tensorstore,threadpoolctl,tifffile,tiktoken,timm,tokenizers,toolz,torch,\
torchaudio,torchdiffeq,torch-geometric,torchmetrics,torchvision,tqdm,transformers,treescope,triton,typer,\
typing-extensions,typing-inspect,urllib3,uvloop,wadler-lindig,werkzeug,wheel,wrapt,xarray,xxhash,yarl,zipp}
[ -x "$VENV/bin/python" ] || { echo "no $VENV: run launch/setup_env.sh first" >&2; exit 2; }

# The closure of distgan's device-side needs over this venv's installed metadata, minus the image's packages.
pins=$("$VENV/bin/python" - "$IMAGE" "$DEVICE_PYTHON" <<'PYEOF'
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.markers import Marker

image, version = set(sys.argv[1].split(",")), sys.argv[2]
env = {"python_version": version, "python_full_version": f"{version}.0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
todo, seen, pins = ["webdataset", "omegaconf", "wandb"], set(), []
while todo:
    name = norm(todo.pop())
    if name in seen or name in image:
        continue
    seen.add(name)
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        sys.exit(f"{name} is needed but not installed in this venv: run launch/setup_env.sh")
    pins.append(f"{dist.metadata['Name']}=={dist.version}")
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        if marker and not Marker(marker).evaluate(env):
            continue  # an extra, or another platform's need
        todo.append(re.split(r"[ <>=!~\[(]", spec.strip())[0])
print(" ".join(sorted(pins)))
PYEOF
)
echo "[wheels] for the device's Python $DEVICE_PYTHON: $pins"
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086  # $pins: one argument per package
"$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$DEVICE_PYTHON" --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins \
  2>&1 | grep -v "is ignored: it is neither" || true
echo "[wheels] $(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl (a device call carries 64 MiB at most)"
MNIST_FROM=${MNIST_FROM:-../shared/data/mnist}
if ls "$MNIST_FROM"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  rm -rf data/mnist-idx && mkdir -p data/mnist-idx
  cp "$MNIST_FROM"/*-ubyte* data/mnist-idx/
  echo "[mnist] $(du -sh data/mnist-idx | cut -f1) in data/mnist-idx (carry .whl and data/mnist-idx)"
else
  echo "[mnist] no IDX files in $MNIST_FROM (set MNIST_FROM): the quality part will say it has no MNIST"
fi
