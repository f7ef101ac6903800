package text

import (
	"encoding/binary"
	"errors"
	"github.com/qcc-dev/qcc/internal/corpus"
	"io/fs"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// canonical texts: Parse then Print must give them back unchanged.
var canonical = []struct{ name, src string }{
	{"minimal", `<
  ir_version: 8,
  opset_import: ["" : 13]
>
g (float[N,4] x) => (float[N,4] y) {
  y = Relu (x)
}
`},
	{"features", `<
  ir_version: 8,
  opset_import: ["" : 13, "com.microsoft" : 1, "weird-domain" : 1],
  producer_name: "qcc",
  producer_version: "0.1",
  domain: "dev.qcc",
  model_version: 3,
  doc_string: "two\nlines \"quoted\" \\ \x01",
  metadata_props: ["author": "me", "k\\": "ünï"]
>
"torch-jit-export" (float[batch,"seq len",4] x, int64[2] "onnx::Reshape_1", float[] any, float s, "float") => (float[batch,"seq len",4] y, z) <
  float[4] w = {1, -2.5, 0.1, 3.4028235e+38},
  int64[1] axes = {0},
  float[4,5] big = {... sha256=0123456789abcdef min=-1 max=1},
  float[2] unknown = {...},
  float[batch,"seq len",4] t
> {
  ["/layer.0/Add"] t = Add (x, w)
  [n2] u, "" = com.microsoft.Op:v2 <axis = -1, alpha = 1.0, beta = 1e-05, mode = "constant", perm: ints = [], ints = [1, 2, 3], floats = [0.5, -inf, nan], strings = ["a", "b c"]> (t, "", axes)  #@ metadata_props: ["pkg.source": "model.py:12", "b": "x\ty"]
  y = Identity (u)
  z = Constant <value = float[2] {1.5, nan}> ()
  = Print (z, big, unknown)
  "/encoder/layer.0/Add_output_0" = "weird-domain".Op <"odd attr" = 1, named = float named_t {2}> ("onnx::Reshape_1")
}
`},
	{"if", `<
  ir_version: 8,
  opset_import: ["" : 13]
>
g (bool c, float[2] x) => (float[2] y) {
  y = If (c) <then_branch = then_g () => (float[2] a) {
    a = Add (x, x)
  }, else_branch = else_g () => (float[2] b) <
    float[2] k = {1, 2}
  > {
    b = Mul (x, k)
  }>
}
`},
	{"loop", `<
  ir_version: 8,
  opset_import: ["" : 13]
>
g (int64 n, bool c0, float[2] x) => (float[2] out, float[?,2] scan) {
  out, scan = Loop (n, c0, x) <body = body (int64 i, bool c, float[2] acc) => (bool c_out, float[2] acc_out, float[2] s) {
    c_out = Identity (c)
    acc_out = Add (acc, x)
    s = Identity (acc_out)
  }>
}
`},
	{"dtypes", `<
  ir_version: 10,
  opset_import: ["" : 21]
>
g () => (a) {
  a = Constant <value = float16[5] {1.0, 0.1, -inf, 65500.0, -0.0}> ()
  b = Constant <value = bfloat16[3] {1.0, 0.1, nan}> ()
  c = Constant <value = int4[3] {-8, 7, 0}> ()
  d = Constant <value = uint4[3] {15, 0, 1}> ()
  e = Constant <value = bool[2] {0, 1}> ()
  f = Constant <value = string[2] {"a", "\"b\""}> ()
  h = Constant <value = complex64[2] {1, 0, -1.5, 2}> ()
  i = Constant <value = double[3] {0.1, -0, 1e-300}> ()
  j = Constant <value = uint64[1] {18446744073709551615}> ()
  k = Constant <value = int8[2] {-128, 127}> ()
  l = Constant <value = float8e4m3fn[2] {0, 255}> ()
  m = Constant <value = int64 {5}> ()
  n = Constant <value = uint2[5] {0, 1, 2, 3, 0}> ()
  o = Constant <value = int2[2] {-2, 1}> ()
  p = Constant <value = float[0] {}> ()
  q = Constant <value = string[20] {... sha256=00112233}> ()
  r = Constant <value = float {-nan}> ()
}
`},
	{"input-initializer", `<
  ir_version: 3,
  opset_import: ["" : 9]
>
g (float[2] x = {1, 2}) => (y) {
  y = Neg (x)
}
`},
	{"types", `<
  ir_version: 8,
  opset_import: ["" : 18]
>
g (seq(float[]) s, map(int64, float) m, optional(seq(float[2])) o, sparse_tensor(float[2,3]) sp, opaque(com.x, T) op, opaque() op2, float[?,N] u) => (seq(float[]) s) {
}
`},
	{"attr-kinds", `<
  ir_version: 8,
  opset_import: ["" : 13, "custom" : 1]
>
g (float[2] x) => (y) {
  y = custom.F (x) <a: int = @ax, b: type_proto = {...}, ts = [float[1] {1}, int64[2] {1, 2}], gs = [g1 () => (float[2] x) {
  }, g2 () => (float[2] x) {
  }], none: graphs = [], e: strings = []>
}
`},
	{"forward-reference", `<
  ir_version: 8,
  opset_import: ["" : 13]
>
g (float x) => (y) {
  y = Neg (t)
  t = Abs (x)
}
`},
}

func reprint(t *testing.T, src string) string {
	t.Helper()
	m, err := Parse(src)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var b strings.Builder
	if err := Print(&b, m, Options{}); err != nil {
		t.Fatalf("print: %v", err)
	}
	return b.String()
}

func TestCanonical(t *testing.T) {
	for _, c := range canonical {
		t.Run(c.name, func(t *testing.T) {
			got := reprint(t, c.src)
			if got != c.src {
				t.Fatalf("printed text differs from the input\n--- got\n%s--- want\n%s%s", got, c.src, firstDiff(got, c.src))
			}
			if again := reprint(t, got); again != got {
				t.Fatalf("second round trip differs%s", firstDiff(again, got))
			}
		})
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "\nfirst difference, line " + strconv.Itoa(i+1) + ":\n got: " + al[i] + "\nwant: " + bl[i]
		}
	}
	return ""
}

func TestParsedStructure(t *testing.T) {
	m, err := Parse(canonical[1].src)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err != nil {
		t.Fatalf("verify: %v", err)
	}
	g := m.Graph
	if g.Name != "torch-jit-export" || m.DocString != "two\nlines \"quoted\" \\ \x01" || m.Metadata[1] != (ir.KV{Key: `k\`, Value: "ünï"}) {
		t.Fatalf("header: %q %q %v", g.Name, m.DocString, m.Metadata)
	}
	if m.Opset("com.microsoft") != 1 {
		t.Fatal("opset import lost")
	}
	x := g.Inputs[0]
	if want := ir.TensorOf(ir.Float, ir.Sym("batch"), ir.Sym("seq len"), ir.D(4)); !x.Type.Equal(want) {
		t.Fatalf("x: %v", x.Type)
	}
	if g.Inputs[2].Type.HasShape || g.Inputs[3].Type.Rank() != 0 || g.Inputs[4].Type != nil || g.Inputs[4].Name != "float" {
		t.Fatal("unknown-rank, scalar or untyped input misread")
	}
	nodes := g.Nodes()
	op := nodes[1]
	if op.Name != "n2" || op.Domain != "com.microsoft" || op.OpType != "Op" || op.Overload != "v2" {
		t.Fatalf("node: %+v", op)
	}
	if op.Input(1) != nil || op.Output(1) != nil || len(op.Inputs()) != 3 || len(op.Outputs()) != 2 {
		t.Fatal("omitted optional input/output not nil")
	}
	if v, _ := op.Meta("pkg.source"); v != "model.py:12" {
		t.Fatal("metadata lost")
	}
	if a := op.Attr("alpha"); a.Type != ir.AttrFloat || a.Float != 1 {
		t.Fatalf("alpha: %+v", a)
	}
	if a := op.Attr("perm"); a.Type != ir.AttrInts || len(a.Ints) != 0 {
		t.Fatalf("perm: %+v", a)
	}
	if a := op.Attr("floats"); a.Type != ir.AttrFloats || !math.IsInf(float64(a.Floats[1]), -1) || a.Floats[2] == a.Floats[2] {
		t.Fatalf("floats: %+v", a)
	}
	if nodes[0].Name != "/layer.0/Add" || nodes[5].Domain != "weird-domain" || nodes[5].Attr("odd attr") == nil ||
		nodes[5].Attr("named").Tensor.Name != "named_t" {
		t.Fatal("quoted names misread")
	}
	big := g.Initializer("big")
	if b, err := big.Bytes(); err != nil || len(b) != 80 || b[0] != 0 {
		t.Fatalf("abbreviated tensor: %v %d", err, len(b))
	}
	if vi := g.ValueInfo; len(vi) != 1 || vi[0].Name != "t" || vi[0].Type.Rank() != 3 {
		t.Fatalf("value_info: %v", vi)
	}
}

func TestSubgraphScopes(t *testing.T) {
	m, err := Parse(canonical[2].src)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err != nil {
		t.Fatalf("verify: %v", err)
	}
	g := m.Graph
	x := g.Value("x")
	ifNode := g.Nodes()[0]
	then := ifNode.Attr("then_branch").Graph
	els := ifNode.Attr("else_branch").Graph
	if then.Parent != g || then.Owner != ifNode || els.Parent != g || els.Owner != ifNode {
		t.Fatal("subgraph parent/owner not set")
	}
	add := then.Nodes()[0]
	if add.Input(0) != x || add.Input(1) != x {
		t.Fatal("then branch does not read the outer x")
	}
	if len(x.Uses()) != 3 {
		t.Fatalf("outer x has %d uses, want 3", len(x.Uses()))
	}
	if els.Initializer("k") == nil || els.Outputs[0].Name != "b" {
		t.Fatal("else branch misread")
	}
}

func TestFloatExact(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	var f32 []float32
	for _, b := range []uint32{0, 0x80000000, 1, 0x807fffff, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x3dcccccd} {
		f32 = append(f32, math.Float32frombits(b))
	}
	for i := 0; i < 20000; i++ {
		b := r.Uint32()
		if f := math.Float32frombits(b); f != f {
			continue // NaN payloads are not kept
		}
		f32 = append(f32, math.Float32frombits(b))
	}
	check := func(name string, dt ir.DataType, n int, raw []byte) {
		t.Helper()
		g := ir.NewGraph("g")
		v, _ := g.AddInitializer("w", ir.NewTensor(dt, []int64{int64(n)}, raw))
		g.Outputs = append(g.Outputs, v)
		var b strings.Builder
		if err := PrintGraph(&b, g, Options{MaxElems: -1}); err != nil {
			t.Fatal(err)
		}
		g2, err := ParseGraph(b.String())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := g2.Initializer("w").Bytes()
		if string(got) != string(raw) {
			for i := 0; i < len(raw); i++ {
				if got[i] != raw[i] {
					t.Fatalf("%s: byte %d differs after a round trip", name, i)
				}
			}
		}
	}
	var raw32 []byte
	for _, f := range f32 {
		raw32 = binary.LittleEndian.AppendUint32(raw32, math.Float32bits(f))
	}
	check("float32", ir.Float, len(f32), raw32)
	var f64 []byte
	for _, b := range []uint64{0, 1 << 63, 1, 0x7fefffffffffffff, 0x7ff0000000000000, 0x7ff8000000000000, 0xfff8000000000000} {
		f64 = binary.LittleEndian.AppendUint64(f64, b)
	}
	for i := 0; i < 20000; i++ {
		b := r.Uint64()
		if f := math.Float64frombits(b); f != f {
			continue
		}
		f64 = binary.LittleEndian.AppendUint64(f64, b)
	}
	check("float64", ir.Double, len(f64)/8, f64)
	// Every float16 and bfloat16 bit pattern but the non-canonical NaNs.
	for _, c := range []struct {
		name string
		dt   ir.DataType
		nan  func(uint16) bool
		q    uint16
	}{
		{"float16", ir.Float16, func(h uint16) bool { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }, 0x7e00},
		{"bfloat16", ir.BFloat16, func(h uint16) bool { return h&0x7f80 == 0x7f80 && h&0x7f != 0 }, 0x7fc0},
	} {
		var raw []byte
		for h := 0; h < 1<<16; h++ {
			if c.nan(uint16(h)) && uint16(h)&0x7fff != c.q {
				continue
			}
			raw = binary.LittleEndian.AppendUint16(raw, uint16(h))
		}
		check(c.name, c.dt, len(raw)/2, raw)
	}
}

func TestEncodeFloatRounding(t *testing.T) {
	// float16: 1 + 2^-11 is halfway between 1 and 1+2^-10, and rounds to even (1).
	for _, c := range []struct {
		f    float64
		want uint64
	}{
		{1, 0x3c00}, {1 + math.Ldexp(1, -11), 0x3c00}, {1 + 3*math.Ldexp(1, -11), 0x3c02},
		{65504, 0x7bff}, {65520, 0x7c00}, {math.Ldexp(1, -24), 0x0001}, {math.Ldexp(1, -25), 0},
		{math.Ldexp(1.5, -25), 0x0001}, {-2, 0xc000}, {0.1, 0x2e66},
	} {
		if got := encodeFloat(c.f, 5, 10); got != c.want {
			t.Errorf("float16(%g) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
	if got := encodeFloat(1.00390625, 8, 7); got != 0x3f80 { // halfway, rounds to even
		t.Errorf("bfloat16(1.00390625) = %#x", got)
	}
}

func TestOddNames(t *testing.T) {
	names := []string{"onnx::MatMul_333", "/encoder/layer.0/Add_output_0", "float", "inf", "NaN", "a\"b\\c",
		"new\nline", "ünï", "\xff\x00", "_ok1", "seq", "1abc"}
	m := &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Domain: "", Version: 13}}}
	g := ir.NewGraph("torch-jit-export")
	m.Graph = g
	prev, _ := g.AddInput("input 0", ir.TensorOf(ir.Float, ir.Sym("batch size"), ir.D(4)))
	for i, name := range names {
		out := &ir.Value{Name: name}
		g.AddNode(&ir.Node{OpType: "Identity", Name: "node " + name}, []*ir.Value{prev}, []*ir.Value{out})
		_ = i
		prev = out
	}
	g.Outputs = append(g.Outputs, prev)
	text := Sprint(m, Options{})
	for _, want := range []string{`"onnx::MatMul_333"`, `"/encoder/layer.0/Add_output_0"`, `"float"`, `"inf"`, `"NaN"`,
		`"a\"b\\c"`, `"new\nline"`, `"ünï"`, `"\xff\x00"`, ` _ok1 `, `"seq"`, `"1abc"`, `"input 0"`, `float[batch size,4]`} {
		if want == `float[batch size,4]` {
			want = `float["batch size",4]`
		}
		if !strings.Contains(text, want) {
			t.Errorf("printed text lacks %s:\n%s", want, text)
		}
	}
	if strings.Count(text, "\n") != 4+1+len(names)+1 {
		t.Errorf("a name broke a line:\n%s", text)
	}
	m2, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range m2.Graph.Nodes() {
		if n.Output(0).Name != names[i] || n.Name != "node "+names[i] {
			t.Errorf("name %q read back as %q (node %q)", names[i], n.Output(0).Name, n.Name)
		}
	}
	if Sprint(m2, Options{}) != text {
		t.Error("reprint differs")
	}
}

func TestAbbreviation(t *testing.T) {
	g := ir.NewGraph("g")
	vals := make([]float32, 17)
	for i := range vals {
		vals[i] = float32(i) - 8.5
	}
	w, _ := g.AddInitializer("w", ir.FloatTensor([]int64{17}, vals))
	s, _ := g.AddInitializer("s", ir.FloatTensor([]int64{16}, vals[:16]))
	g.Outputs = append(g.Outputs, w, s)
	var b strings.Builder
	PrintGraph(&b, g, Options{})
	text := b.String()
	if !strings.Contains(text, "float[17] w = {... sha256=") || !strings.Contains(text, " min=-8.5 max=7.5}") {
		t.Fatalf("17 elements not abbreviated:\n%s", text)
	}
	if !strings.Contains(text, "float[16] s = {-8.5, -7.5,") {
		t.Fatalf("16 elements abbreviated:\n%s", text)
	}
	b.Reset()
	PrintGraph(&b, g, Options{MaxElems: 4})
	if !strings.Contains(b.String(), "float[16] s = {... sha256=") {
		t.Fatal("MaxElems ignored")
	}
	b.Reset()
	PrintGraph(&b, g, Options{MaxElems: -1})
	if strings.Contains(b.String(), "...") {
		t.Fatal("MaxElems -1 abbreviated")
	}
	// Read back: zero data, same text; new data gets a new summary.
	g2, err := ParseGraph(text)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	PrintGraph(&b, g2, Options{})
	if b.String() != text {
		t.Fatalf("abbreviated tensor reprinted differently:\n%s", b.String())
	}
	w2 := g2.Initializer("w")
	w2.SetBytes(make([]byte, 68))
	b.Reset()
	PrintGraph(&b, g2, Options{})
	if b.String() == text || !strings.Contains(b.String(), "min=0 max=0}") {
		t.Fatalf("replaced data kept the old summary:\n%s", b.String())
	}
}

func TestErrors(t *testing.T) {
	head := "<\n  ir_version: 8,\n  opset_import: [\"\" : 13]\n>\n"
	for _, c := range []struct{ name, src, want string }{
		{"unterminated string", "g (float x) => (float y) {\n  y = Relu (\"x)\n}\n", `2:13: unterminated string`},
		{"unterminated graph", "g (float x) => (float y) {\n  y = Relu (x)\n", `3:1: expected a node or '}' to close graph g, found end of input`},
		{"unknown type", "g (flaot[2] x) => (y) {\n}\n", `1:4: unknown type "flaot"`},
		{"unknown type 2", "g (float[2] x) => (y) {\n  y = Cast <t = flaot[2] {1, 2}> (x)\n}\n", `2:17: unknown type "flaot"`},
		{"undefined input", "g (float x) => (y) {\n  y = Add (x, z)\n}\n", `2:15: undefined value "z" (input 1 of Add node)`},
		{"undefined quoted input", "g (float x) => (y) {\n  [n] y = Add (x, \"a::b\")\n}\n", `2:19: undefined value "a::b" (input 1 of Add node "n")`},
		{"undefined output", "g (float x) => (y) {\n}\n", `1:17: undefined graph output "y"`},
		{"defined twice", "g (float x) => (y) {\n  y = Neg (x)\n  y = Abs (x)\n}\n", `3:3: value "y" is defined twice`},
		{"missing =>", "g (float x) (y) {\n}\n", `1:13: expected '=>' between the graph inputs and outputs, found '('`},
		{"missing paren", "g (float x) => (y) {\n  y = Neg x\n}\n", `2:11: expected '(' to open the node inputs, found identifier x`},
		{"value count", "g () => (w) <\n  float[2] w = {1}\n> {\n}\n", `2:16: float[2] needs 2 values, found 1`},
		{"range", "g () => (w) <\n  uint8[1] w = {300}\n> {\n}\n", `2:17: value 300 out of range for uint8`},
		{"not a number", "g () => (w) <\n  float[1] w = {\"a\"}\n> {\n}\n", `2:17: expected a float value, found string "a"`},
		{"symbolic data", "g () => (w) <\n  float[N] w = {1}\n> {\n}\n", `2:14: tensor data needs numeric dimensions, found N`},
		{"empty list", "g (x) => (y) {\n  y = F <a = []> (x)\n}\n", `2:14: an empty list needs a type, as in a: ints = []`},
		{"attr type", "g (x) => (y) {\n  y = F <a: int = 1.5> (x)\n}\n", `2:19: attribute a is int but the value is float`},
		{"unknown field", "<\n  ir_verison: 8\n>\ng () => () {\n}\n", `2:3: unknown model field ir_verison`},
		{"bad escape", "g (\"a\\x4\" x) => () {\n}\n", `1:6: expected two hex digits after \x`},
		{"trailing", head + "g () => () {\n}\nh\n", `7:1: expected end of input after the graph, found identifier h`},
		{"abbrev newline", "g () => (w) <\n  float[20] w = {... sha\n}\n> {\n}\n", `2:25: expected '}' to close the abbreviated tensor on the same line`},
		{"bad char", "g () => () {\n  $\n}\n", `2:3: unexpected character '$'`},
		{"value_info of nothing", "g () => () <\n  float q\n> {\n}\n", `2:9: value_info names "q", which this graph does not define`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.src)
			if err == nil {
				t.Fatalf("no error, want %s", c.want)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *text.Error", err)
			}
			if err.Error() != c.want {
				t.Fatalf("error\n got: %v\nwant: %s", err, c.want)
			}
		})
	}
}

// TestCorpus prints every model of the shared corpus, reads the text back and prints it
// again: the two texts must be identical and the node counts per op type equal.
func TestCorpus(t *testing.T) {
	root := filepath.Join("..", "..", "..", "shared", "models")
	if _, err := os.Stat(root); err != nil {
		corpus.Skip(t, "model corpus %s not present: %v", root, err)
	}
	var files []string
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".onnx") {
			files = append(files, path)
		}
		return nil
	})
	sort.Strings(files)
	if len(files) == 0 {
		t.Skipf("no .onnx files under %s", root)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		t.Run(rel, func(t *testing.T) {
			m, err := ir.Load(f)
			if err != nil {
				t.Skipf("load: %v", err)
			}
			text := Sprint(m, Options{})
			m2, err := Parse(text)
			if err != nil {
				t.Fatalf("parse of printed text: %v", err)
			}
			again := Sprint(m2, Options{})
			if again != text {
				t.Fatalf("reprint differs%s", firstDiff(again, text))
			}
			c1, c2 := opCounts(m.Graph), opCounts(m2.Graph)
			if len(c1) != len(c2) {
				t.Fatalf("op types: %v vs %v", c1, c2)
			}
			for k, v := range c1 {
				if c2[k] != v {
					t.Fatalf("%s: %d nodes, %d after the round trip", k, v, c2[k])
				}
			}
			if m.Verify() == nil {
				if err := m2.Verify(); err != nil {
					t.Fatalf("model verifies but its text does not: %v", err)
				}
			}
		})
	}
}

func opCounts(g *ir.Graph) map[string]int {
	c := map[string]int{}
	g.Walk(func(sg *ir.Graph) error {
		for _, n := range sg.Nodes() {
			c[n.Domain+"."+n.OpType]++
		}
		c["#values"] += len(sg.ValueNames())
		c["#initializers"] += len(sg.Initializers)
		return nil
	})
	return c
}

func FuzzParse(f *testing.F) {
	for _, c := range canonical {
		f.Add(c.src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		m, err := Parse(src)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *text.Error", err)
			}
			return
		}
		text := Sprint(m, Options{})
		m2, err := Parse(text)
		if err != nil {
			t.Fatalf("printed text does not parse: %v\n%s", err, text)
		}
		if again := Sprint(m2, Options{}); again != text {
			t.Fatalf("reprint differs%s", firstDiff(again, text))
		}
	})
}
