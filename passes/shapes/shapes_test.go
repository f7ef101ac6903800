package shapes

import (
	"context"
	"testing"

	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/pass"
)

// "shapes" is an analysis (never changes the model); "value-info" lists every typed
// intermediate value once, and running it again adds nothing.
func TestPasses(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,seq,64] x) => (float[batch,seq,64] y) <int64[4] s4 = {0, 0, 4, 16}, int64[3] s3 = {0, 0, 64}> {
  r = Reshape (x, s4)
  t = Transpose <perm = [0, 2, 1, 3]> (r)
  u = Transpose <perm = [0, 2, 1, 3]> (t)
  y = Reshape (u, s3)
}`)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := pass.Parse("value-info", []*pass.Pass{Pass, ValueInfoPass})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := pl.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Stats) != 2 || rep.Stats[0].Pass != "shapes" || rep.Stats[0].Changed || !rep.Stats[1].Changed {
		t.Fatalf("report %+v", rep.Stats)
	}
	if len(m.Graph.ValueInfo) != 3 {
		t.Errorf("%d value_info entries, want 3 (r, t, u)", len(m.Graph.ValueInfo))
	}
	if n := WriteValueInfo(m); n != 0 {
		t.Errorf("a second run added %d entries", n)
	}
	if got := m.Graph.ValueInfo[0].Type.String(); got != "float[batch,seq,4,16]" {
		t.Errorf("r: %s", got)
	}
}
