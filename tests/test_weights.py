"""The one state_dict reader as `import` meets it: each hostile file is one line, exit 2, nothing on disk changes."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from pipeline import cli
from pipeline.catalog import get

MODEL = "two_layer_net"  # 101,110 float32 parameters (about 400 KB): a bomb of 64 MiB is 160 times that
ESC = "\x1b"


def tree_hash(root: Path) -> dict[str, str]:
    """Every file under `root` (names and bytes): what 'byte-identical' compares."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def clean_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return get(MODEL).build().state_dict()


def deflated_bomb(path: Path) -> None:
    """A state_dict whose first weight is a view of a 64 MiB storage of zeros, the archive rewritten deflated:
    about 70 KB on disk that torch.load would unpack to 64 MiB (the same shape as a 2 GiB bomb in 2 MB)."""
    state = clean_state()
    big = torch.zeros(16 * 2**20)
    state["linear1.weight"] = big[: 100 * 1000].view(100, 1000)
    plain = io.BytesIO()
    torch.save(state, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))


def save(path: Path, change) -> Path:
    state = clean_state()
    change(state)
    torch.save(state, path)
    return path


def _set(key: str, value) -> object:
    return lambda s: s.__setitem__(key, value)


def _nan(s: dict) -> None:
    s["linear2.bias"][3] = float("nan")


def _inf(s: dict) -> None:
    s["linear1.weight"][0, 7] = float("-inf")


def _cast(dtype: torch.dtype):
    return lambda s: s.update({k: v.to(dtype) for k, v in s.items()})


HOSTILE = {  # name: (how the file is made, what the one line must say)
    "nan": (lambda p: save(p, _nan), "linear2.bias holds 1 NaN"),
    "inf": (lambda p: save(p, _inf), "linear1.weight holds 1 infinite"),
    "int8": (lambda p: save(p, _cast(torch.int8)), "linear1.weight is int8; expected a floating"),
    "int64": (lambda p: save(p, _cast(torch.int64)), "linear1.weight is int64; expected a floating"),
    "bool": (lambda p: save(p, _cast(torch.bool)), "linear1.weight is bool; expected a floating"),
    "complex64": (lambda p: save(p, _cast(torch.complex64)), "linear1.weight is complex64; expected a floating"),
    "float64 lossy": (
        lambda p: save(p, lambda s: s.update({"linear2.bias": s["linear2.bias"].double() + 1e-12})),
        "float32 cannot hold exactly",
    ),
    "sparse": (
        lambda p: save(p, lambda s: s.update({"linear2.weight": s["linear2.weight"].to_sparse()})),
        "linear2.weight is a sparse tensor",
    ),
    "not a tensor": (lambda p: save(p, _set("linear2.bias", 3)), "linear2.bias is a int; expected a tensor"),
    "bomb": (deflated_bomb, "compressed"),
    "escape in a key": (
        lambda p: save(p, _set("evil\n\x1b[31mred\x1b[0m", torch.zeros(1))),
        r"unexpected keys 'evil\n\x1b[31mred\x1b[0m'",
    ),
    "another model's weights": (
        lambda p: torch.save(get("adder_mynet").build().state_dict(), p),
        "does not fit",
    ),
    "legacy format": (
        lambda p: torch.save(clean_state(), p, _use_new_zipfile_serialization=False),
        "zip archive",
    ),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """An artifacts folder holding an imported MODEL, and a loss plot an import must not delete when it refuses."""
    root = tmp_path_factory.mktemp("import")
    torch.save(clean_state(), root / "good.pt")
    artifacts = root / "artifacts"
    assert (
        cli.main(["import", "--model", MODEL, "--state-dict", str(root / "good.pt"), "--artifacts", str(artifacts)])
        == 0
    )
    (artifacts / MODEL / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n a plot of earlier training")
    return artifacts


@pytest.mark.parametrize("case", list(HOSTILE))
def test_import_refuses_a_hostile_state_dict_in_one_line_and_changes_nothing(imported, tmp_path, capsys, case):
    make, says = HOSTILE[case]
    path = tmp_path / "hostile.pt"
    make(path)
    before = tree_hash(imported)
    capsys.readouterr()
    code = cli.main(["import", "--model", MODEL, "--state-dict", str(path), "--artifacts", str(imported)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and ESC not in err and err.startswith("error: "), err
    assert says in err, err
    assert tree_hash(imported) == before


def test_a_bomb_is_refused_before_its_storage_is_unpacked(tmp_path):
    from pipeline.artifacts.weights import WeightsError, load_state_dict

    deflated_bomb(tmp_path / "bomb.pt")
    assert (tmp_path / "bomb.pt").stat().st_size < 200_000
    with pytest.raises(WeightsError, match=r"67,1\d\d,\d\d\d bytes .*from a [\d,]+-byte file"):
        load_state_dict(get(MODEL).build(), tmp_path / "bomb.pt")


def test_float16_and_exact_float64_weights_import_as_their_float32_values(tmp_path, capsys):
    from pipeline.artifacts.weights import load_state_dict

    state = clean_state()
    for dtype in (torch.float16, torch.float64):
        wanted = {k: v.to(dtype).float() for k, v in state.items()}  # float16 rounds once, on the user's side
        torch.save({k: v.to(dtype) for k, v in state.items()}, tmp_path / "w.pt")
        module = load_state_dict(get(MODEL).build(), tmp_path / "w.pt")
        got = module.state_dict()
        assert all(got[k].dtype == torch.float32 and torch.equal(got[k], wanted[k]) for k in state), dtype
        code = cli.main(
            ["import", "--model", MODEL, "--state-dict", str(tmp_path / "w.pt"), "--artifacts", str(tmp_path / "a")]
        )
        assert code == 0, capsys.readouterr().err


def test_an_archive_at_its_size_budget(tmp_path):
    """Unpacked bytes equal to the budget pass; one byte over is refused before anything is unpacked."""
    import zipfile as zf

    from pipeline.artifacts.weights import STATE_BYTES_FACTOR, STATE_SLACK_BYTES, WeightsError, check_archive, own_bytes

    module = get(MODEL).build()
    assert STATE_BYTES_FACTOR * own_bytes(module) + STATE_SLACK_BYTES == 2 * 404_440 + 2**20
    torch.save(clean_state(), tmp_path / "w.pt")
    with zf.ZipFile(tmp_path / "w.pt") as archive:
        unpacked = sum(m.file_size for m in archive.infolist())
    check_archive(tmp_path / "w.pt", unpacked)
    with pytest.raises(
        WeightsError, match=f"holds {unpacked:,} bytes of tensors and pickle; .* at most {unpacked - 1:,}"
    ):
        check_archive(tmp_path / "w.pt", unpacked - 1)
