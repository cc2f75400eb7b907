"""A job's input and output channels (algorithm.inputs / algorithm.outputs) and OBS locations: parsed from
a create body, each fault naming its field (ModelArts' InputsOutputsError, or InvalidObsPath)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openarts.core import errors
from openarts.core.fields import array, bad, container_path, item_name, obj, text
from openarts.core.resources import Dataset

MAX_CHANNELS = 100


@dataclass(frozen=True)
class Channel:
    name: str
    index: int  # position among channels of the same name: data_url_0, data_url_1 ...
    obs_url: str
    local_dir: str | None  # as the user gave it (a container path), or None for the default
    mode: str = ""  # an output's: "upload_periodically" (ModelArts' default) or "upload_on_exit"
    period_s: float | None = None  # an output's upload period as given ("30s"); None: the server's default


OUTPUT_MODES = ("upload_periodically", "upload_on_exit")
PERIOD_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h)?$")
PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600}


def output_mode(item: dict[str, Any], p: str) -> tuple[str, float | None]:
    """An output's `mode` and `period` ("30s", "5m", "1h" or seconds; at least 1 s)."""
    mode = text(item, "mode", p, limit=32) or ""
    if mode and mode not in OUTPUT_MODES:
        raise bad(f"{p}.mode", f"must be one of {', '.join(OUTPUT_MODES)}")
    raw = item.get("period")
    if raw is None or raw == "":
        return mode, None
    m = PERIOD_RE.match(str(raw).strip()) if isinstance(raw, str | int | float) and not isinstance(raw, bool) \
        else None
    seconds = float(m.group(1)) * PERIOD_UNITS[m.group(2) or "s"] if m else 0.0
    if not m or seconds < 1 or seconds > 86400:
        raise bad(f"{p}.period", 'must be a period of 1 s to 24 h, e.g. "30s", "5m"')
    return mode, seconds


def check_obs_url(url: str, path: str) -> str:
    """An OBS location: obs://bucket/key or /bucket/key. No '..' segments, no NULs."""
    rest = url[len("obs://"):] if url.startswith("obs://") else url[1:] if url.startswith("/") else None
    if rest is None or not rest or rest.startswith("/"):
        raise errors.InvalidObsPath(f"Invalid OBS path {path}={url!r}: use obs://bucket/path or /bucket/path.")
    if any(seg in ("..", ".") for seg in rest.split("/")) or "\\" in rest:
        raise errors.InvalidObsPath(f"Invalid OBS path {path}={url!r}: '.' and '..' segments are not allowed.")
    return url


def parse_channels(algorithm: dict[str, Any], key: str, path: str,
              datasets: Mapping[str, Dataset] | None = None) -> list[Channel]:
    try:
        return _channel_list(algorithm, key, path, datasets)
    except errors.InvalidObsPath:
        raise
    except errors.InvalidRequest as exc:  # any other fault of a channel: ModelArts' InputsOutputsMessageError
        raise errors.InputsOutputsError(exc.message) from None


def _dataset_url(dataset: dict[str, Any], key: str, where: str, datasets: Mapping[str, Dataset] | None) -> str | None:
    """`remote.dataset`'s obs_url. At create (`datasets`: the registry) its `id` and `version_id` are
    looked up and the block is rewritten with the version's obs_url and the dataset's name, as ModelArts
    reports them: the stored request keeps what was resolved, so a registry changed later moves no job.
    A stored request (`datasets` None) keeps the obs_url it holds. A block without an id is taken by its
    obs_url alone."""
    ds_id = text(dataset, "id", where, limit=64)
    version = text(dataset, "version_id", where, limit=64)
    if not ds_id and not version:
        return text(dataset, "obs_url", where)
    if key != "inputs":
        raise errors.InputsOutputsError(f"Inputs/outputs error: {where}: only an input can be a dataset; an "
                                        "output goes to remote.obs.obs_url.")
    if not ds_id or not version:
        raise errors.InputsOutputsError(f"Inputs/outputs error: {where} needs both id and version_id.")
    if datasets is None:
        return text(dataset, "obs_url", where)
    found = datasets.get(ds_id)
    if found is None:
        known = ", ".join(sorted(datasets)[:20]) or "none is registered"
        raise errors.InputsOutputsError(
            f"Inputs/outputs error: {where}.id: dataset {ds_id!r} is not in this server's dataset registry "
            f"([datasets] in its config file; known: {known}).")
    url = found.versions.get(version)
    if url is None:
        raise errors.InputsOutputsError(
            f"Inputs/outputs error: {where}.version_id: dataset {ds_id!r} has no version {version!r} "
            f"(its versions: {', '.join(sorted(found.versions)[:20])}).")
    dataset["obs_url"] = url
    if found.name:
        dataset["name"] = found.name
    else:
        dataset.pop("name", None)  # only the registry names a dataset
    return url


def _channel_list(algorithm: dict[str, Any], key: str, path: str,
                  datasets: Mapping[str, Dataset] | None = None) -> list[Channel]:
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(array(algorithm, key, path, MAX_CHANNELS)):
        p = f"{path}.{key}[{i}]"
        name = item_name(item, p, 64)
        remote = obj(item, "remote", p, required=True)
        obs = obj(remote, "obs", f"{p}.remote")
        dataset = obj(remote, "dataset", f"{p}.remote")
        url = text(obs, "obs_url", f"{p}.remote.obs")
        if url and (dataset.get("id") or dataset.get("version_id")):
            raise errors.InputsOutputsError(f"Inputs/outputs error: {p}.remote: use either obs or dataset, "
                                            "not both.")
        url = url or _dataset_url(dataset, key, f"{p}.remote.dataset", datasets)
        if not url:
            raise errors.InputsOutputsError(
                f"Inputs/outputs error: {p}.remote needs obs.obs_url"
                + (" or dataset.id and dataset.version_id." if key == "inputs" else ".")
            )
        check_obs_url(url, f"{p}.remote.{'dataset' if dataset and not obs.get('obs_url') else 'obs'}.obs_url")
        local_dir = container_path(item, "local_dir", p)
        index = seen.get(name, 0)
        seen[name] = index + 1
        mode, period = output_mode(item, p) if key == "outputs" else ("", None)
        out.append(Channel(name, index, url, local_dir, mode, period))
    return out
