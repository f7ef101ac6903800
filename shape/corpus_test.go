package shape

import (
	"encoding/json"
	"github.com/qcc-dev/qcc/internal/corpus"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

func corpusModels(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"", "trained", "large"} {
		fs, _ := filepath.Glob(filepath.Join(corpus.Dir(t), dir, "*.onnx"))
		files = append(files, fs...)
	}
	if len(files) == 0 {
		corpus.Skip(t, "no models in %s", corpus.Dir(t))
	}
	sort.Strings(files)
	return files
}

// TestCorpus types every model of the corpus: every node output must get a known element
// type and rank, and last_hidden_state its declared shape.
func TestCorpus(t *testing.T) {
	for _, path := range corpusModels(t) {
		name := strings.TrimSuffix(filepath.Base(path), ".onnx")
		t.Run(name, func(t *testing.T) {
			m, err := ir.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Infer(m)
			if err != nil {
				t.Fatalf("Infer: %v", err)
			}
			if len(r.NoRule) > 0 {
				t.Errorf("ops without a rule: %v", r.NoRule)
			}
			for _, v := range r.Untyped {
				p, _ := v.Producer()
				t.Errorf("untyped: %s = %s: %v", v.Name, p, v.Type)
			}
			hidden := int64(64)
			switch {
			case strings.HasPrefix(name, "bert-base"):
				hidden = 768
			case strings.HasPrefix(name, "bert-large"):
				hidden = 1024
			case strings.HasPrefix(name, "bert-cls-trained"):
				hidden = 128
			}
			if lhs := m.Graph.Value("last_hidden_state"); lhs != nil {
				want := ir.TensorOf(ir.Float, ir.Sym("batch"), ir.Sym("sequence"), ir.D(hidden))
				if strings.Contains(name, ".static.") {
					want = ir.TensorOf(ir.Float, ir.D(1), ir.D(128), ir.D(hidden))
				}
				if !lhs.Type.Equal(want) {
					t.Errorf("last_hidden_state: %s, want %s", lhs.Type, want)
				}
				// The value the last node computes must match, not just the declaration.
				p, _ := lhs.Producer()
				checkProducedShape(t, p, want, m.Opset(""))
			}
			// Inference reads no weights: externally stored tensors stay on disk.
			for _, v := range m.Graph.Initializers {
				if v.Const.External() != nil && v.Const.Materialised() {
					t.Errorf("initializer %q was read", v.Name)
				}
			}
			t.Logf("%d node outputs: %d typed, %d fully static, %d untyped", r.Values, r.Typed, r.Static, r.Unknown)
		})
	}
}

// checkProducedShape re-infers the producing node with the output's declaration removed.
func checkProducedShape(t *testing.T, n *ir.Node, want *ir.Type, opset int64) {
	t.Helper()
	if n == nil {
		return
	}
	o := n.Output(0)
	decl := o.Type
	o.Type = nil
	defer func() { o.Type = decl }()
	if err := InferNode(n, opset); err != nil {
		t.Fatal(err)
	}
	if !o.Type.Equal(want) {
		t.Errorf("%s infers %s, want %s", n, o.Type, want)
	}
}

// TestAgainstONNX compares with onnx.shape_inference (Debian's python3-onnx) on two
// models: element types and ranks must agree wherever both infer them, and so must dims
// that both know as numbers.
func TestAgainstONNX(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	models := []string{"bert.opset13.onnx", "deberta-v2.opset17.onnx"}
	var paths []string
	for _, name := range models {
		path := filepath.Join(corpus.Dir(t), name)
		if _, err := os.Stat(path); err != nil {
			corpus.Skip(t, "corpus absent: %v", err)
		}
		paths = append(paths, path)
	}
	script := filepath.Join(t.TempDir(), "infer.py")
	err := os.WriteFile(script, []byte(`import json, sys
try:
    import onnx
    from onnx import shape_inference
except ImportError:
    print("null")
    sys.exit(0)
res = {}
for path in sys.argv[1:]:
    m = shape_inference.infer_shapes(onnx.load(path, load_external_data=False), data_prop=True)
    out = {}
    for v in list(m.graph.value_info) + list(m.graph.output):
        tt = v.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        out[v.name] = [tt.elem_type, dims]
    res[path] = out
json.dump(res, sys.stdout)
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, append([]string{script}, paths...)...).Output()
	if err != nil {
		t.Fatalf("onnx shape inference: %v", err)
	}
	var refs map[string]map[string][2]any
	if err := json.Unmarshal(out, &refs); err != nil {
		t.Fatal(err)
	}
	if refs == nil {
		t.Skip("python3-onnx not installed")
	}
	for i, path := range paths {
		t.Run(models[i], func(t *testing.T) {
			m, err := ir.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Infer(m); err != nil {
				t.Fatal(err)
			}
			both, sameDims := 0, 0
			for vname, r := range refs[path] {
				v := m.Graph.Value(vname)
				if v == nil || v.Type == nil {
					continue
				}
				if dt := ir.DataType(r[0].(float64)); dt != ir.Undefined && dt != v.Type.DType {
					t.Errorf("%s: dtype %s, onnx says %s", vname, v.Type.DType, dt)
				}
				dims, ok := r[1].([]any)
				if !ok || v.Type.Rank() < 0 {
					continue
				}
				both++
				if len(dims) != v.Type.Rank() {
					t.Errorf("%s: %s, onnx says rank %d %v", vname, v.Type, len(dims), dims)
					continue
				}
				same := true
				for k, d := range dims {
					ours := v.Type.Shape[k]
					x, num := d.(float64)
					switch {
					case num && ours.Known && int64(x) != ours.Value:
						t.Errorf("%s: dim %d is %d, onnx says %v", vname, k, ours.Value, x)
					case num != ours.Known:
						same = false
						if os.Getenv("SHAPES_DEBUG") != "" {
							t.Logf("%s: %s, onnx %v", vname, v.Type, dims)
						}
					}
				}
				if same {
					sameDims++
				}
			}
			t.Logf("%d values ranked by both; %d with the same known dims", both, sameDims)
		})
	}
}
