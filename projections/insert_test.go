package projections

import (
	"fmt"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// A table's rows of a batch go as one INSERT sent in blocks of insertChunk
// rows; ClickHouse squashes the blocks, so the batch is still one part
// (merges stopped, so none could hide a second one), with every row.
func TestInsertInBlocksIsOnePart(t *testing.T) {
	e := newEnv(t, "")
	must(t, e.conn.Exec(e.ctx, "CREATE DATABASE IF NOT EXISTS "+e.db), "create database")
	table := e.db + ".blocks"
	must(t, e.conn.Exec(e.ctx, "CREATE TABLE "+table+" (seq UInt64, s String) ENGINE = ReplacingMergeTree(seq) ORDER BY seq"), "create table")
	must(t, e.conn.Exec(e.ctx, "SYSTEM STOP MERGES "+table), "stop merges")
	defer func() { _ = e.conn.Exec(e.ctx, "SYSTEM START MERGES "+table) }()

	n := 3*insertChunk + 5
	blocks := 0
	err := insertRows(e.ctx, e.conn, table, "seq, s", n, func(b driver.Batch, lo, hi int) error {
		blocks++
		for i := lo; i < hi; i++ {
			if err := b.Append(uint64(i), fmt.Sprintf("row %d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	must(t, err, "insert")
	if blocks != 4 {
		t.Fatalf("%d rows appended in %d chunks, want 4", n, blocks)
	}
	var parts, rows, distinct uint64
	must(t, e.conn.QueryRow(e.ctx, "SELECT count() FROM system.parts WHERE database = ? AND table = 'blocks' AND active", e.db).Scan(&parts), "parts")
	must(t, e.conn.QueryRow(e.ctx, "SELECT count(), uniqExact(seq) FROM "+table).Scan(&rows, &distinct), "rows")
	if parts != 1 || rows != uint64(n) || distinct != uint64(n) {
		t.Fatalf("%d parts with %d rows (%d distinct), want 1 part with %d", parts, rows, distinct, n)
	}
}
