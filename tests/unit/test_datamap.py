"""The data map: the shipped file is valid, and bad maps fail with a message that says where."""

from pathlib import Path

import pytest

from shared.datamap import DataMapError, load_datamap

SHIPPED = Path(__file__).parents[2] / "deploy" / "datamap.yaml"


def test_the_shipped_data_map_describes_every_kind_of_store():
    datamap = load_datamap(SHIPPED)
    assert {d.store for d in datamap.datasets} == {"mongo", "postgres", "s3", "milvus"}
    assert datamap.get("api_usage_daily").exempt
    assert not datamap.get("invoices").exempt
    assert datamap.get("uploads").s3.prefix_for("u1") == "users/u1/"
    assert datamap.get("orders").postgres.tables() == ["shop.orders", "shop.order_items"]


def test_a_postgres_dataset_names_its_children_and_its_tables_parent_first():
    from shared.datamap import PostgresLocation

    loc = PostgresLocation.model_validate(
        {
            "table": "shop.orders",
            "subject_column": "customer_id",
            "cascade": [
                {
                    "table": "shop.order_items",
                    "foreign_key": "order_id",
                    "cascade": [{"table": "shop.item_notes", "foreign_key": "item_id"}],
                },
                {"table": "shop.payments", "foreign_key": "order_id"},
            ],
        }
    )
    assert loc.tables() == ["shop.orders", "shop.order_items", "shop.item_notes", "shop.payments"]
    assert loc.primary_key == "id" and loc.tag_column is None


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
            "tag_then_purge is for mongo and postgres",
        ),
        (
            "datasets: [{name: a, store: postgres, postgres: {table: t, subject_column: u}, mode: tag_then_purge}]",
            "needs postgres.tag_column",
        ),
        # Identifiers come only from the map and must be plain names: no quotes, spaces, or statements.
        ('datasets: [{name: a, store: postgres, postgres: {table: "t; DROP TABLE x", subject_column: u}}]', "table"),
        ('datasets: [{name: a, store: postgres, postgres: {table: "a.b.c", subject_column: u}}]', "table"),
        ("datasets: [{name: a, store: postgres, postgres: {table: t, subject_column: 'u\"'}}]", "subject_column"),
        (
            "datasets: [{name: a, store: postgres, postgres: {table: t, subject_column: u, cascade: [{table: c}]}}]",
            "foreign_key",
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
