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


def test_text_that_is_not_utf8_is_read_as_null_flagged_and_logged(tmp_path, caplog) -> None:
    """Data contract rule 7: a plain BINARY column holds any bytes, and a writer can break a STRING
    one. Such a value is read as null, `flag_utf8` marks its row, and a warning names the file and
    column; pyarrow's cast to text refused the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake.raw_contract_arrow import TEXT_IS_UTF8, read_raw_piece

    path = tmp_path / "part-0.parquet"
    broken_string = pa.Array.from_buffers(
        pa.string(), 3, [None, pa.array([0, 2, 4, 6], pa.int32()).buffers()[1], pa.py_buffer(b"u1u2v\xfe")]
    )
    table = pa.table({"merchant_id": pa.array([b"m1", b"m\xc3", None]), "user_id": broken_string})
    pq.write_table(table, path, store_schema=False)
    columns = (("merchant_id", "merchant_id"), ("user_id", "user_id"))
    piece = RawPiece(str(path), "2026-09-01", (0,), columns)
    with caplog.at_level("WARNING", logger="featurelake.raw_contract_arrow"):
        flagged = read_raw_piece(piece, ["merchant_id", "user_id"], flag_utf8=True)
    assert flagged.to_pydict() == {
        "merchant_id": ["m1", None, None],
        "user_id": ["u1", "u2", None],
        TEXT_IS_UTF8: [True, False, False],
    }
    assert [record.getMessage() for record in caplog.records] == [
        f"{path} (row groups [0]): 1 merchant_id values are not UTF-8 (data contract rule 7), read as null",
        f"{path} (row groups [0]): 1 user_id values are not UTF-8 (data contract rule 7), read as null",
    ]
    assert read_raw_piece(piece, ["merchant_id"]).to_pydict() == {"merchant_id": ["m1", None, None]}
    # A clean piece is flagged true throughout.
    clean = tmp_path / "part-1.parquet"
    pq.write_table(pa.table({"merchant_id": ["m1", "m2"], "user_id": ["u1", None]}), clean)
    piece = RawPiece(str(clean), "2026-09-01", (0,), columns)
    assert read_raw_piece(piece, flag_utf8=False, columns=["user_id"]).to_pydict() == {
        "user_id": ["u1", None]
    }
    assert read_raw_piece(piece, ["user_id"], flag_utf8=True).column(TEXT_IS_UTF8).to_pylist() == [True, True]
