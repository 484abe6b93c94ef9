"""A manifest of the wrong shape is one CheckpointError line naming it, never a KeyError."""

import json

import pytest

from scaletrain.checkpoint.manifest import verify_manifest
from scaletrain.errors import CheckpointError


def _edit(manifest: dict, change: str):
    entry = next(iter(manifest["files"]))
    edits = {
        "without files": lambda m: m.pop("files"),
        "version as a string": lambda m: m.update(version="1"),
        "version as a bool": lambda m: m.update(version=True),
        "a newer version": lambda m: m.update(version=99),
        "step as a string": lambda m: m.update(step="../../x"),
        "files as a list": lambda m: m.update(files=[entry]),
        "an entry without bytes": lambda m: m["files"][entry].pop("bytes"),
        "an entry with bytes as a string": lambda m: m["files"][entry].update(bytes="12"),
        "an entry without sha256": lambda m: m["files"][entry].pop("sha256"),
        "an entry as a list": lambda m: m["files"].update({entry: [1, 2]}),
        "a name with a folder": lambda m: m["files"].update({"sub/x": m["files"][entry]}),
        "a name going up": lambda m: m["files"].update({"../x": m["files"][entry]}),
        "an absolute name": lambda m: m["files"].update({"/etc/passwd": m["files"][entry]}),
    }
    edits[change](manifest)
    return manifest


CASES = {
    "as a list": ([], "expected a JSON object, got list"),
    "not JSON": ("{not json", "not valid JSON"),
    "without files": (None, "lacks `files`"),
    "version as a string": (None, "`version` must be a positive integer, got '1'"),
    "version as a bool": (None, "`version` must be a positive integer, got True"),
    "a newer version": (None, "format version 99 is newer"),
    "step as a string": (None, "`step` must be a non-negative integer"),
    "files as a list": (None, "`files` must be an object of file names, got list"),
    "an entry without bytes": (None, "lacks `bytes`"),
    "an entry with bytes as a string": (None, "`bytes` must be a size, got '12'"),
    "an entry without sha256": (None, "lacks `sha256`"),
    "an entry as a list": (None, "is not an object"),
    "a name with a folder": (None, "lists 'sub/x', which is not a file of this folder"),
    "a name going up": (None, "lists '../x', which is not a file of this folder"),
    "an absolute name": (None, "lists '/etc/passwd', which is not a file of this folder"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_manifest_is_one_line_naming_it(saved, case):
    replacement, expected = CASES[case]
    path = saved.path / "manifest.json"
    if replacement is None:
        replacement = _edit(json.loads(path.read_text()), case)
    path.write_text(replacement if isinstance(replacement, str) else json.dumps(replacement))
    with pytest.raises(CheckpointError) as caught:
        verify_manifest(saved.path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "\n" not in message


def test_a_valid_manifest_lists_every_file(saved):
    manifest = verify_manifest(saved.path)
    assert manifest.version == 2 and manifest.step == 5
    assert sorted(manifest.files) == ["__0_0.safetensors", "metadata.json", "rank_00000.json"]
