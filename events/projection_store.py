"""A projection's state in its database: its generations' tables, the offsets each reached,
what each left out, and which one is active (events.projection says what they are for)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka import TopicPartition
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from events.db import Database
from events.envelope import utcnow
from events.reading import Positions
from events.tables import projection_offsets, projections

if TYPE_CHECKING:
    from events.projection import Projection

# Events a generation left out, counted in the transaction that moves its offsets past them,
# so the counts survive restarts and belong to the rows that miss them (a replay's
# generation counts its own). A table of its own, created by ``ProjectionStore.ensure``:
# databases made before it need no ALTER.
_counts_metadata = MetaData()
projection_skipped = Table(
    "choreo_projection_skipped",
    _counts_metadata,
    Column("projection", String(255), primary_key=True),
    Column("generation", Integer, primary_key=True),
    # Applying them failed for good: the live runner dead-lettered them, a replay skipped them.
    Column("dead_lettered", BigInteger, nullable=False),
    Column("undecodable", BigInteger, nullable=False),  # bytes no contract reads
)


@dataclass
class Skipped:
    dead_lettered: int = 0
    undecodable: int = 0


class Generation:
    """One generation's tables; ``gen["orders"]`` is the Table for base name ``orders``."""

    def __init__(self, projection: Projection, number: int) -> None:
        self.number = number
        # True while a replay fills this generation: nothing reads it yet, and a replay
        # killed midway drops it, so a projection may keep rows in memory across its
        # transactions until ``Projection.flush_building``.
        self.building = False
        self.metadata = MetaData()
        projection.define_tables(self.metadata, f"_g{number}")
        suffix = f"_g{number}"
        self.tables = {t.name.removesuffix(suffix): t for t in self.metadata.sorted_tables}

    def __getitem__(self, base_name: str) -> Table:
        return self.tables[base_name]


class ProjectionStore:
    """A projection's generations, offsets and active pointer in its database."""

    def __init__(self, projection: Projection, db: Database) -> None:
        self.projection = projection
        self.db = db
        self._generations: dict[int, Generation] = {}

    def generation(self, number: int) -> Generation:
        if number not in self._generations:
            self._generations[number] = Generation(self.projection, number)
        return self._generations[number]

    async def ensure(self) -> int:
        """Creates the state row and the first generation's tables if absent."""
        async with self.db.engine.begin() as conn:
            await conn.run_sync(_counts_metadata.create_all)
        async with self.db.session() as s, s.begin():
            row = await s.execute(
                select(projections.c.active_generation).where(
                    projections.c.projection == self.projection.name
                )
            )
            active = row.scalar_one_or_none()
            if active is None:
                active = 1
                await s.execute(
                    projections.insert().values(
                        projection=self.projection.name, active_generation=1, updated_at=utcnow()
                    )
                )
        await self.create_tables(active)
        return int(active)

    async def state(self) -> tuple[int, int | None]:
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(
                        projections.c.active_generation, projections.c.building_generation
                    ).where(projections.c.projection == self.projection.name)
                )
            ).one()
        return int(row[0]), (int(row[1]) if row[1] is not None else None)

    async def create_tables(self, number: int) -> None:
        async with self.db.engine.begin() as conn:
            await conn.run_sync(self.generation(number).metadata.create_all)

    async def drop_generation(self, number: int) -> None:
        async with self.db.engine.begin() as conn:
            await conn.run_sync(self.generation(number).metadata.drop_all)
            await conn.execute(
                delete(projection_offsets).where(
                    projection_offsets.c.projection == self.projection.name,
                    projection_offsets.c.generation == number,
                )
            )
            await conn.execute(
                delete(projection_skipped).where(
                    projection_skipped.c.projection == self.projection.name,
                    projection_skipped.c.generation == number,
                )
            )

    async def offsets(self, number: int, session: AsyncSession | None = None) -> Positions:
        query = select(
            projection_offsets.c.topic,
            projection_offsets.c.partition,
            projection_offsets.c.next_offset,
        ).where(
            projection_offsets.c.projection == self.projection.name,
            projection_offsets.c.generation == number,
        )
        if session is not None:
            rows = (await session.execute(query)).all()
        else:
            async with self.db.session() as s:
                rows = (await s.execute(query)).all()
        return {TopicPartition(t, p): int(o) for t, p, o in rows}

    async def active_for_update(self, session: AsyncSession) -> int:
        """The active generation, locking the state row until the transaction ends."""
        row = await session.execute(
            select(projections.c.active_generation)
            .where(projections.c.projection == self.projection.name)
            .with_for_update()
        )
        return int(row.scalar_one())

    async def skipped(self, number: int) -> Skipped:
        """What the generation left out so far (``projection_skipped``)."""
        t = projection_skipped
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(t.c.dead_lettered, t.c.undecodable).where(
                        t.c.projection == self.projection.name, t.c.generation == number
                    )
                )
            ).one_or_none()
        return Skipped() if row is None else Skipped(int(row[0]), int(row[1]))

    async def add_skipped(
        self, session: AsyncSession, number: int, dead_lettered: int, undecodable: int
    ) -> None:
        """Counts events the generation leaves out, in the transaction that passes them."""
        if not dead_lettered and not undecodable:
            return
        t = projection_skipped
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        upsert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = upsert(t).values(
            projection=self.projection.name,
            generation=number,
            dead_lettered=dead_lettered,
            undecodable=undecodable,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["projection", "generation"],
            set_={
                "dead_lettered": t.c.dead_lettered + stmt.excluded.dead_lettered,
                "undecodable": t.c.undecodable + stmt.excluded.undecodable,
            },
        )
        await session.execute(stmt)

    async def save_offsets(self, session: AsyncSession, number: int, positions: Positions) -> None:
        rows = [
            {
                "projection": self.projection.name,
                "generation": number,
                "topic": tp.topic,
                "partition": tp.partition,
                "next_offset": offset,
            }
            for tp, offset in positions.items()
        ]
        if not rows:
            return
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        upsert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = upsert(projection_offsets).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["projection", "generation", "topic", "partition"],
            set_={"next_offset": stmt.excluded.next_offset},
        )
        await session.execute(stmt)
