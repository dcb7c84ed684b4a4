"""How the Dask merchant stats job cuts raw files into pieces of row groups (pure logic)."""

from __future__ import annotations

from featurelake.raw_contract_arrow import RawFile, RawFooter, RawPiece, RawWindow, raw_pieces

COLUMNS = {"amount": "Amount"}


def _window(*row_group_bytes: list[int]) -> tuple[RawWindow, list[RawFooter]]:
    files = [
        RawFile(f"lake/date=2026-09-0{n}/part-0.parquet", 1, f"2026-09-0{n}")
        for n in range(1, len(row_group_bytes) + 1)
    ]
    return RawWindow(files, [], None), [RawFooter([], COLUMNS, sizes) for sizes in row_group_bytes]


def test_consecutive_row_groups_fill_a_piece_up_to_the_limit() -> None:
    window, footers = _window([100, 100, 300, 50, 60], [10])
    pieces = raw_pieces(window, footers, max_bytes=200)
    assert [(piece.day, piece.row_groups) for piece in pieces] == [
        ("2026-09-01", (0, 1)),
        ("2026-09-01", (2,)),  # larger than the limit: a piece of its own
        ("2026-09-01", (3, 4)),
        ("2026-09-02", (0,)),
    ]
    assert pieces[0] == RawPiece(
        "lake/date=2026-09-01/part-0.parquet", "2026-09-01", (0, 1), (("amount", "Amount"),)
    )


def test_a_file_without_row_groups_has_no_piece() -> None:
    window, footers = _window([], [5, 5])
    assert [(piece.day, piece.row_groups) for piece in raw_pieces(window, footers, max_bytes=100)] == [
        ("2026-09-02", (0, 1))
    ]


def test_a_piece_is_read_in_the_columns_asked_for_cast_as_the_contract_says(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.raw_contract_arrow import read_raw_piece

    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"Merchant_ID": pa.array([b"m1", b"m2"]), "Amount": pa.array([1.5, 2.0])}), path)
    piece = RawPiece(str(path), "2026-09-01", (0,), (("merchant_id", "Merchant_ID"), ("amount", "Amount")))
    table = read_raw_piece(piece, ["amount", "merchant_id"])
    assert table.schema == pa.schema([("amount", pa.float64()), ("merchant_id", pa.string())])
    assert table.to_pydict() == {"amount": [1.5, 2.0], "merchant_id": ["m1", "m2"]}
