"""keyvault's KeyEncryptionKey port, one contract for the local keyring (in memory) and KmsKek against the
KMS-compatible endpoint of the local stack."""

import base64
import json
import os

import pytest
import pytest_asyncio

from services.keyvault.adapters.kek import KmsKek, LocalKeyring
from services.keyvault.ports import KekError

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
CONTEXT = {"subject_id": "u1", "dataset": "profiles", "key_id": "dek_" + "a" * 32}
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


@pytest_asyncio.fixture(params=["local", "kms"])
async def kek(request):
    if request.param == "local":
        keys = {"current": "kek-1", "keys": {"kek-1": base64.b64encode(os.urandom(32)).decode()}}
        yield LocalKeyring.from_json(json.dumps(keys))
        return
    endpoint = os.environ.get("LETHE_TEST_KMS_ENDPOINT_URL")
    if not endpoint:
        pytest.fail("LETHE_TEST_KMS_ENDPOINT_URL is not set: start the stack with `make up`", pytrace=False)
    import aioboto3

    async with aioboto3.Session(region_name="us-east-1", **CREDENTIALS).client("kms", endpoint_url=endpoint) as kms:
        key_id = (await kms.create_key(Description="lethe test KEK"))["KeyMetadata"]["KeyId"]
    provider = KmsKek(key_id=key_id, region="us-east-1", endpoint_url=endpoint, **CREDENTIALS)
    await provider.start()
    yield provider
    await provider.stop()


async def test_a_wrapped_key_opens_under_the_current_kek_and_its_context(kek):
    dek = os.urandom(32)
    kek_id, wrapped = await kek.wrap(dek, CONTEXT)
    assert kek_id == kek.current_id
    assert dek not in wrapped
    assert await kek.unwrap(kek_id, wrapped, CONTEXT) == dek


async def test_the_same_key_wrapped_twice_gives_two_different_blobs(kek):
    dek = os.urandom(32)
    assert (await kek.wrap(dek, CONTEXT))[1] != (await kek.wrap(dek, CONTEXT))[1]


async def test_a_wrapped_key_does_not_open_under_another_context(kek):
    kek_id, wrapped = await kek.wrap(os.urandom(32), CONTEXT)
    for other in ({**CONTEXT, "subject_id": "u2"}, {**CONTEXT, "dataset": "invoices"}):
        with pytest.raises(KekError):
            await kek.unwrap(kek_id, wrapped, other)


async def test_a_tampered_wrapped_key_does_not_open(kek):
    kek_id, wrapped = await kek.wrap(os.urandom(32), CONTEXT)
    tampered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(KekError):
        await kek.unwrap(kek_id, tampered, CONTEXT)
