"""The data map: the shipped file is valid, and bad maps fail with a message that says where."""

from pathlib import Path

import pytest

from shared.datamap import DataMapError, load_datamap

SHIPPED = Path(__file__).parents[2] / "deploy" / "datamap.yaml"


def test_the_shipped_data_map_describes_every_kind_of_store():
    datamap = load_datamap(SHIPPED)
    assert {d.store for d in datamap.datasets} == {"mongo", "s3", "milvus"}
    assert datamap.get("api_usage_daily").exempt
    assert not datamap.get("invoices").exempt
    assert datamap.get("uploads").s3.prefix_for("u1") == "users/u1/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datasets: [{name: a, store: redis}]", "store"),
        ("datasets: [{name: a, store: mongo}]", "exactly a 'mongo' location"),
        ("datasets: [{name: a, store: s3, s3: {bucket: bkt, prefix: users/}}]", "{subject_id}"),
        (
            "datasets: [{name: a, store: mongo, mongo: {collection: c, subject_field: f}},"
            " {name: a, store: mongo, mongo: {collection: d, subject_field: f}}]",
            "duplicate dataset names: a",
        ),
        ("datasets: [{name: a, store: mongo, mongo: {collection: c}}]", "subject_field"),
        (
            "datasets: [{name: a, store: milvus, milvus: {collection: c, filter_field: f}, mode: tag_then_purge}]",
            "tag_then_purge is for mongo",
        ),
        ("datasets: [{name: A B, store: mongo, mongo: {collection: c, subject_field: f}}]", "name"),
        ("datasets: {", "not valid YAML"),
    ],
)
def test_a_bad_data_map_fails_with_a_clear_message(tmp_path, text, message):
    path = tmp_path / "datamap.yaml"
    path.write_text(text)
    with pytest.raises(DataMapError, match=message.replace("{", r"\{").replace("}", r"\}").replace("'", "'")):
        load_datamap(path)


def test_a_missing_data_map_says_which_file(tmp_path):
    with pytest.raises(DataMapError, match="cannot read"):
        load_datamap(tmp_path / "nope.yaml")
