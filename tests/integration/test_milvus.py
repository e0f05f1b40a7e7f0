"""Milvus Lite, embedded in a file: insert vectors and delete one subject's by filter expression."""

import random

import pytest
from pymilvus import DataType, MilvusClient

pytestmark = pytest.mark.integration


def test_a_subjects_vectors_are_deleted_by_filter_and_no_one_elses(milvus_uri):
    client = MilvusClient(uri=milvus_uri)
    try:
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("subject_id", DataType.VARCHAR, max_length=128)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=8)
        index = client.prepare_index_params()
        index.add_index(field_name="embedding", index_type="FLAT", metric_type="L2")
        client.create_collection("embeddings", schema=schema, index_params=index)
        rows = [
            {"id": i, "subject_id": f"user-{i % 4}", "embedding": [random.random() for _ in range(8)]}
            for i in range(40)
        ]
        client.insert("embeddings", rows)

        deleted = client.delete("embeddings", filter='subject_id == "user-2"')

        # Milvus Lite (pymilvus 3) answers with the primary keys it deleted.
        assert sorted(deleted) == [i for i in range(40) if i % 4 == 2]
        left = client.query("embeddings", filter='subject_id == "user-2"', output_fields=["id"])
        assert left == []
        others = client.query("embeddings", filter='subject_id != "user-2"', output_fields=["id"])
        assert len(others) == 30
    finally:
        client.close()
