// Package golden runs txtar golden cases for passes. A case file holds:
//
//	-- pipeline --   the passes to run, as on the command line (fold,cse)
//	-- input --      a model in ONNX text syntax
//	-- want --       the model after the pipeline (golden, rewritten by -update)
//	-- report --     optional: what -stats prints (golden, rewritten by -update)
//
// A case whose name starts with "nochange-" must leave the model as it was; its comment
// says why. Every case is also checked for idempotence: running the pipeline on the
// result changes nothing.
package golden

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/qcc-dev/qcc/internal/txtar"
	"github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/pass"
)

// Run runs every dir/*.txtar case.
func Run(t *testing.T, dir string, registry []*pass.Pass) {
	files, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases in %s", dir)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txtar")
		t.Run(name, func(t *testing.T) { runCase(t, f, name, registry) })
	}
}

func runCase(t *testing.T, file, name string, registry []*pass.Pass) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	a := txtar.Parse(data)
	spec, ok := a.Get("pipeline")
	if !ok {
		t.Fatal("case has no pipeline section")
	}
	input, ok := a.Get("input")
	if !ok {
		t.Fatal("case has no input section")
	}
	pipe, err := pass.Parse(strings.TrimSpace(string(spec)), registry)
	if err != nil {
		t.Fatal(err)
	}
	m, err := text.Parse(string(input))
	if err != nil {
		t.Fatalf("input: %v", err)
	}
	before := print(t, m)
	report, err := pipe.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	got := print(t, m)
	var rep bytes.Buffer
	report.WriteStats(&rep, false)

	if strings.HasPrefix(name, "nochange-") && got != before {
		t.Errorf("a nochange case changed the model:\n%s", cmp.Diff(before, got))
	}
	if *update.Golden {
		a.Set("want", []byte(got))
		if _, has := a.Get("report"); has || rep.Len() > 0 {
			a.Set("report", rep.Bytes())
		}
		if err := os.WriteFile(file, txtar.Format(a), 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		want, ok := a.Get("want")
		if !ok {
			t.Fatal("case has no want section; run go test -update to create it")
		}
		if diff := cmp.Diff(string(want), got); diff != "" {
			t.Errorf("model after %s differs from golden (-want +got):\n%s", spec, diff)
		}
		if wantRep, ok := a.Get("report"); ok {
			if diff := cmp.Diff(string(wantRep), rep.String()); diff != "" {
				t.Errorf("report differs from golden (-want +got):\n%s", diff)
			}
		}
	}

	// Idempotence: a second run over the output changes nothing.
	m2, err := text.Parse(got)
	if err != nil {
		t.Fatalf("output does not parse back: %v", err)
	}
	if _, err := pipe.Run(context.Background(), m2, &pass.Instrumentation{VerifyEach: true}); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if again := print(t, m2); again != got {
		t.Errorf("pipeline is not idempotent; second run changed:\n%s", cmp.Diff(got, again))
	}
}

func print(t *testing.T, m *ir.Model) string {
	t.Helper()
	var b strings.Builder
	if err := text.Print(&b, m, text.Options{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
