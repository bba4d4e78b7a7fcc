"""The `.backup` document of ClickHouse's native backups, and its file checksum, without a server."""

from __future__ import annotations

import io

import pytest

from vaultflow.engines.clickhouse.client import chdb_config_xml, quote_name, quote_text, translate
from vaultflow.engines.clickhouse.listing import ChecksumReader, ClickHouseChecksum, check_entry, parse_listing
from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.errors import ConfigError, IntegrityError, NotFoundError

DOC = b"""<config><version>1</version><deduplicate_files>1</deduplicate_files>
<timestamp>2026-11-30 03:00:00</timestamp><uuid>0b5e-uuid</uuid>
<base_backup>Disk('backups', 'parent')</base_backup><base_backup_uuid>base-uuid</base_backup_uuid>
<contents>
<file><name>metadata/db.sql</name><size>40</size><checksum>0123456789ABCDEF0123456789abcdef</checksum></file>
<file><name>data/db/t/all_1_1_0/data.bin</name><size>100</size><checksum>11</checksum><use_base>true</use_base></file>
<file><name>data/db/t/log.txt</name><size>30</size><checksum>22</checksum><use_base>true</use_base>
  <base_size>10</base_size><base_checksum>33</base_checksum></file>
<file><name>data/db/u/all_1_1_0/data.bin</name><size>40</size><checksum>0123456789abcdef0123456789abcdef</checksum>
  <data_file>metadata/db.sql</data_file></file>
<file><name>data/db/t/empty.txt</name><size>0</size></file>
</contents></config>"""


def test_parse_listing_reads_bases_and_deduplicated_files():
    listing = parse_listing(DOC, "x")
    assert (listing.uuid, listing.base_backup, listing.base_backup_uuid) == (
        "0b5e-uuid",
        "Disk('backups', 'parent')",
        "base-uuid",
    )
    by_name = {e.name: e for e in listing.entries}
    assert by_name["metadata/db.sql"].checksum == "0123456789abcdef0123456789abcdef"
    assert by_name["data/db/t/all_1_1_0/data.bin"].data_file is None, "all of it is in the base"
    assert (by_name["data/db/t/log.txt"].base_size, by_name["data/db/t/log.txt"].stored_here) == (10, 20)
    assert by_name["data/db/t/empty.txt"].data_file is None
    assert set(listing.data_files()) == {"metadata/db.sql", "data/db/t/log.txt"}


def test_parse_listing_refuses_what_is_not_one():
    with pytest.raises(IntegrityError, match="obj.zst is not a ClickHouse .backup"):
        parse_listing(b"<html/>", "obj.zst")


@pytest.mark.parametrize("cut", [1, 2047, 2048, 2049, 5000])
def test_checksum_does_not_depend_on_how_the_bytes_arrive(cut: int):
    data = bytes(range(256)) * 40  # 10240 bytes: five 2 KiB blocks
    whole = ClickHouseChecksum()
    whole.update(data)
    pieces = ClickHouseChecksum()
    pieces.update(data[:cut])
    pieces.update(data[cut:])
    reader = ChecksumReader(io.BytesIO(data))
    while reader.read(777):
        pass
    assert whole.hexdigest() == pieces.hexdigest() == reader.checksum.hexdigest()
    assert len(whole.hexdigest()) == 32 and reader.checksum.size == len(data)
    other = ClickHouseChecksum()
    other.update(data[:-1] + b"\x00")
    assert other.hexdigest() != whole.hexdigest()


def test_check_entry_names_size_and_checksum_differences():
    entry = parse_listing(DOC, "x").entries[0]
    check_entry(entry, 40, entry.checksum, "f")
    with pytest.raises(IntegrityError, match="f: 39 bytes, but the backup's .backup lists 40"):
        check_entry(entry, 39, entry.checksum, "f")
    with pytest.raises(IntegrityError, match="f: ClickHouse checksum 00"):
        check_entry(entry, 40, "00", "f")


def test_quoting_and_config():
    assert quote_name("a`b\\c") == "`a\\`b\\\\c`"
    assert quote_text("it's") == "'it\\'s'"
    xml = chdb_config_xml({"backups": "/x/b"}, ["backups"])
    assert "<backups><type>local</type><path>/x/b/</path></backups>" in xml
    assert "<allowed_disk>backups</allowed_disk>" in xml


def test_errors_name_the_setting_or_the_database():
    config = ClickHouseSettings(target_name="t", backup_disk="bk", password="s3cret-pw")
    disk = translate(Exception("Code: 318. DB::Exception: Disk bk is not allowed for backups"), config)
    assert isinstance(disk, ConfigError) and "<allowed_disk>bk</allowed_disk>" in str(disk)
    missing = translate(Exception("Code: 81. DB::Exception: Database nope does not exist"), config, "nope")
    assert isinstance(missing, NotFoundError) and "database 'nope'" in str(missing)
    assert "s3cret-pw" not in str(disk) + str(missing) + repr(config)


def test_a_missing_base_backup_and_chdbs_disk_refusal_are_named():
    from vaultflow.errors import ToolError

    config = ClickHouseSettings(target_name="t", backup_disk="bk")
    base = translate(Exception("Code: 599. DB::Exception: Backup Disk('bk', 'p'): Entry x not found"), config)
    assert isinstance(base, ToolError) and "base backup is missing or incomplete (error 599)" in str(base)
    chdb = translate(
        Exception("Code: 36. DB::Exception: Disk 'bk' is not allowed for backups, see the 'backups.allowed_disk' "),
        config,
    )
    assert isinstance(chdb, ConfigError) and "<allowed_disk>bk</allowed_disk>" in str(chdb)
