package eventstore

import "testing"

// What the index keeps of an operation, from the headers of the commits
// that carry its id, in stream order.
func TestOperationIndexFold(t *testing.T) {
	type commit struct {
		seq         uint64
		op, typ, id string
	}
	for _, tc := range []struct {
		name    string
		commits []commit
		want    map[string]OperationRef
	}{
		{"one cluster operation", []commit{{1, "a", "cluster", "prod-a"}, {2, "a", "cluster", "prod-a"}},
			map[string]OperationRef{"a": {Seq: 1, AggregateType: "cluster", AggregateID: "prod-a", Home: "prod-a"}}},
		{"operations of two clusters, interleaved", []commit{{1, "a", "cluster", "prod-a"}, {2, "b", "cluster", "prod-b"}, {3, "a", "cluster", "prod-a"}},
			map[string]OperationRef{"a": {Seq: 1, AggregateType: "cluster", AggregateID: "prod-a", Home: "prod-a"},
				"b": {Seq: 2, AggregateType: "cluster", AggregateID: "prod-b", Home: "prod-b"}}},
		{"a command that completed on its machine", []commit{{1, "m", "machine", "10.0.0.1"}},
			map[string]OperationRef{"m": {Seq: 1, AggregateType: "machine", AggregateID: "10.0.0.1"}}},
		{"first on a machine, then on its cluster", []commit{{1, "a", "machine", "10.0.0.1"}, {2, "a", "cluster", "prod-a"}},
			map[string]OperationRef{"a": {Seq: 1, AggregateType: "machine", AggregateID: "10.0.0.1", Home: "prod-a"}}},
		{"the first cluster stays its home", []commit{{1, "a", "cluster", "prod-a"}, {2, "a", "cluster", "prod-b"}},
			map[string]OperationRef{"a": {Seq: 1, AggregateType: "cluster", AggregateID: "prod-a", Home: "prod-a"}}},
		{"a commit without operation, and one seen again", []commit{{1, "", "machine", "10.0.0.1"}, {2, "a", "cluster", "prod-a"}, {2, "b", "cluster", "prod-b"}},
			map[string]OperationRef{"a": {Seq: 2, AggregateType: "cluster", AggregateID: "prod-a", Home: "prod-a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := (&Store{}).NewOperationIndex("cluster")
			for _, c := range tc.commits {
				x.apply(c.seq, c.op, c.typ, c.id)
			}
			if len(x.ops) != len(tc.want) {
				t.Fatalf("index %+v, want %+v", x.ops, tc.want)
			}
			for id, want := range tc.want {
				if got := x.ops[id]; got != want {
					t.Errorf("operation %s: %+v, want %+v", id, got, want)
				}
			}
			if last := tc.commits[len(tc.commits)-1].seq; x.Applied() != last {
				t.Errorf("applied %d, want %d", x.Applied(), last)
			}
		})
	}
}
