"""The three-node cluster's configuration and the catalogue's replication defaults, without
starting a broker (tests/integration/test_cluster.py starts one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.catalogue import SCHEMAS_ROOT, Catalogue, CatalogueError, load_replication
from infra.broker import write_config
from infra.cluster import _identity, private_cluster


def test_the_catalogue_replicates_three_ways_with_two_in_sync():
    replication = Catalogue.load().replication
    assert (replication.replication_factor, replication.min_insync_replicas) == (3, 2)
    assert load_replication(SCHEMAS_ROOT / "topics.yaml") == replication
    assert replication.configs()["unclean.leader.election.enable"] == "false"


@pytest.mark.parametrize(
    "body",
    [
        "replication: {replication_factor: 3, min_insync_replicas: 4}",
        "replication: {replication_factor: three}",
        "replication: {replicas: 3}",
    ],
)
def test_a_bad_replication_setting_is_one_clear_error(tmp_path: Path, body: str):
    path = tmp_path / "topics.yaml"
    path.write_text(body + "\n")
    with pytest.raises(CatalogueError, match="replication"):
        load_replication(path)


def test_each_node_is_configured_as_one_voter_of_the_same_quorum(tmp_path: Path):
    spec = private_cluster(tmp_path / "cluster")
    quorum = ",".join(f"127.0.0.1:{node.controller_port}" for node in spec.nodes)
    for node in spec.nodes:
        write_config(node)
        lines = set(node.config_file.read_text().splitlines())
        assert f"node.id={node.node_id}" in lines
        assert f"controller.quorum.bootstrap.servers={quorum}" in lines
        assert "offsets.topic.replication.factor=3" in lines
        assert "transaction.state.log.min.isr=2" in lines
    assert len({node.port for node in spec.nodes} | {n.controller_port for n in spec.nodes}) == 6


def test_the_cluster_id_and_directory_ids_are_made_once(tmp_path: Path):
    spec = private_cluster(tmp_path / "cluster")
    spec.home.mkdir(parents=True)
    first = _identity(spec)
    assert _identity(spec) == first
    cluster_id, directory_ids = first
    assert sorted(directory_ids) == ["1", "2", "3"]
    assert len(set(directory_ids.values()) | {cluster_id}) == 4
    assert all(
        len(i) == 22 and not i.startswith("-") for i in [cluster_id, *directory_ids.values()]
    )
