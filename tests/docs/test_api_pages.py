"""The hand-written tables of the API reference pages agree with the code they describe."""
import builtins
import re

from zoobot.shared import errors, label_metadata, schemas

from .snippets import DOCS

_ROW = re.compile(r"^\| (?P<cells>.+) \|$")


def _table_rows(page: str, first_header: str) -> list:
    lines = (DOCS / page).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        match = _ROW.match(line)
        if not match:
            break
        rows.append([cell.strip().strip("`") for cell in match.group("cells").split(" | ")])
    return rows


def test_the_tree_table_matches_label_metadata_and_the_prebuilt_schemas():
    rows = _table_rows("api/shared/schemas.md", "pairs dict")
    assert len(rows) >= 30
    for pairs_name, n_questions, n_answers, _suffix, dependencies_name, schema_name in rows:
        pairs = getattr(label_metadata, pairs_name)
        assert len(pairs) == int(n_questions), pairs_name
        assert sum(len(answers) for answers in pairs.values()) == int(n_answers), pairs_name
        if dependencies_name != "(none upstream)":
            assert isinstance(getattr(label_metadata, dependencies_name), dict), dependencies_name
        if schema_name != "-":
            schema = getattr(schemas, schema_name)
            assert schema.n_answers == int(n_answers), schema_name
            assert schema.label_cols == label_metadata.extract_questions_and_label_cols(pairs)[1], schema_name


def test_the_error_catalogue_names_real_exception_classes():
    rows = _table_rows("api/shared/errors.md", "Code")
    assert [row[0] for row in rows] == [f"E{i}" for i in range(1, 15)]
    for _code, exception, _when in rows:
        cls = getattr(errors, exception, None) or getattr(builtins, exception)
        assert issubclass(cls, Exception), exception
