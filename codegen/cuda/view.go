package cuda

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// The views are what the templates range over: the plan with its C text
// (prototypes, calls, comments) laid out by the helpers below, which wrap at
// lineWidth columns deterministically.
const lineWidth = 100

type view struct {
	Source    string
	BF16      bool // a kernel has a bfloat16 launch function
	Includes  []string
	Kernels   []*kernelView
	Instances []*instanceView
	Skipped   []string
}

type kernelView struct {
	*kernel
	Comment []string // the header's comment lines, without "// "
	Decls   []string // prototypes, f32 then f16
	Defs    []defView
	Lines   []string // the Spec struct's members
	Blocks  string
}

type defView struct{ Proto, Body string }

type instanceView struct {
	*instance
	ID      string   // the block id, safe in a string literal
	Header  []string // comment lines for the header's instance table
	Loads   []loadView
	Pack    string // the statement packing q, k, v for a packed kernel
	Dims    []string
	Cases   []caseView
	Kernel  *kernel
	Summary string
}

type loadView struct{ Var, CType, File, Count string }

type caseView struct {
	Func, Type string
	Uploads    []bufView
	Outputs    []bufView
	Call       string
	Expects    []expectView
	Bytes      string
	Flops      string // "" when not reported
}

type bufView struct{ Elem, Var, Host, Count string }

type expectView struct{ Param, Atol, Rtol string }

// elem types: the C API's and the launcher's (C++) element type per variant.
var variants = []struct {
	suffix, api, cpp string
	size             int
}{
	{"_f32", "float", "float", 4},
	{"_f16", "qcc_half", "__half", 2},
	{"_bf16", "qcc_bfloat16", "__nv_bfloat16", 2},
}

func (p param) cType(api string) string {
	e := p.Elem
	if e == "T" {
		e = api
	}
	if p.Out {
		return e + "*"
	}
	return "const " + e + "*"
}

func newView(p *plan) *view {
	v := &view{Source: sanitize(p.Source)}
	inc := map[string]bool{}
	for _, k := range p.Kernels {
		inc[k.Header] = true
		v.Kernels = append(v.Kernels, newKernelView(k))
		for _, e := range k.elems() {
			v.BF16 = v.BF16 || e == elemBF16
		}
	}
	for h := range inc {
		v.Includes = append(v.Includes, h)
	}
	sort.Strings(v.Includes)
	for _, in := range p.Instances {
		v.Instances = append(v.Instances, newInstanceView(in))
	}
	for _, s := range p.Skipped {
		v.Skipped = append(v.Skipped, wrapText(sanitize(s), lineWidth-5)...)
	}
	return v
}

func newKernelView(k *kernel) *kernelView {
	kv := &kernelView{kernel: k}
	kv.Comment = wrapText(k.Name+": "+k.Doc, lineWidth-3)
	w := 0
	for _, p := range k.Params {
		if p.Present {
			w = max(w, len(p.Name))
		}
	}
	for _, p := range k.Params {
		if p.Present {
			dir := "in "
			if p.Out {
				dir = "out"
			}
			kv.Comment = append(kv.Comment, fmt.Sprintf("  %s %-*s  %s", dir, w, p.Name, p.Doc))
		}
	}
	var ids []string
	for _, in := range k.Instances {
		ids = append(ids, sanitize(in.ID))
	}
	kv.Comment = append(kv.Comment, wrapText("Blocks: "+strings.Join(ids, ", ")+".", lineWidth-3)...)
	for _, c := range k.Consts {
		kv.Lines = append(kv.Lines, fmt.Sprintf("static constexpr %s %s = %s;", c.CType, c.Name, c.Value))
	}
	for _, e := range k.elems() {
		vr := variants[e]
		var params, args []string
		for _, p := range k.Params {
			if p.Present {
				params = append(params, p.cType(vr.api)+" "+p.Name)
				args = append(args, p.Name)
			} else {
				args = append(args, "nullptr")
			}
		}
		for _, s := range k.Scalars {
			params = append(params, s.CType+" "+s.Name)
			args = append(args, s.Name)
		}
		params = append(params, "cudaStream_t stream")
		args = append(args, "stream")
		proto := wrapList("cudaError_t "+k.Name+vr.suffix+"(", params, ")")
		kv.Decls = append(kv.Decls, proto)
		body := wrapList("  return "+k.Launcher+"<"+vr.cpp+", "+k.Struct+">(", args, ");")
		kv.Defs = append(kv.Defs, defView{Proto: proto, Body: body})
	}
	return kv
}

func fmtTol(f float64) string {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

func newInstanceView(in *instance) *instanceView {
	k := in.Kernel
	iv := &instanceView{instance: in, Kernel: k, ID: sanitize(in.ID)}
	iv.Summary = fmt.Sprintf("%s (%s, %s): %s", iv.ID, in.Where, sanitize(in.Variant), k.Name)
	iv.Header = []string{iv.Summary}
	w := 0
	for _, b := range in.Bind {
		w = max(w, len(b.Param))
	}
	for _, b := range in.Bind {
		iv.Header = append(iv.Header, fmt.Sprintf("  %-*s = %s %s", w, b.Param, b.Value, b.Type))
	}
	for _, d := range in.Dims {
		iv.Dims = append(iv.Dims, fmt.Sprintf("const %s %s = %d;", d.CType, d.Name, d.Value))
	}
	byParam := map[string]*tensor{}
	for _, t := range in.Tensors {
		byParam[t.Param] = t
		name := t.Param
		if t.Out {
			name = "want_" + t.Param
		}
		iv.Loads = append(iv.Loads, loadView{Var: name, CType: t.CType(), File: t.File, Count: strconv.FormatInt(t.Count(), 10)})
	}
	if in.Packed {
		iv.Pack = fmt.Sprintf("const std::vector<float> qkv = qcc::check::Pack3(q, k, v, %d);", in.Hidden)
	}
	for _, vi := range in.checked() {
		vr := variants[vi]
		cv := caseView{Func: k.Name + vr.suffix, Type: strings.TrimPrefix(vr.suffix, "_")}
		var args []string
		if in.Packed {
			cv.Uploads = append(cv.Uploads, bufView{Elem: vr.cpp, Var: "d_qkv", Host: "qkv"})
		}
		for _, p := range k.Params {
			elem := p.Elem
			if elem == "T" {
				elem = vr.cpp
			}
			switch {
			case !p.Present: // absent from the C API
			case in.Packed && (p.Name == "q" || p.Name == "k" || p.Name == "v"):
				off := map[string]string{"q": "", "k": fmt.Sprintf(" + %d", in.Hidden), "v": fmt.Sprintf(" + %d", 2*in.Hidden)}[p.Name]
				args = append(args, "d_qkv"+off)
			case p.Out:
				t := byParam[p.Name]
				cv.Outputs = append(cv.Outputs, bufView{Elem: elem, Var: "d_" + p.Name, Count: strconv.FormatInt(t.Count(), 10)})
				cv.Expects = append(cv.Expects, expectView{Param: p.Name, Atol: fmtTol(in.tol(vi)[0]), Rtol: fmtTol(in.tol(vi)[1])})
				args = append(args, "d_"+p.Name)
			default:
				cv.Uploads = append(cv.Uploads, bufView{Elem: elem, Var: "d_" + p.Name, Host: p.Name})
				args = append(args, "d_"+p.Name)
			}
		}
		for _, s := range k.Scalars {
			args = append(args, s.Name)
		}
		args = append(args, "stream")
		cv.Call = wrapList("      return "+cv.Func+"(", args, ");")
		cv.Bytes = strconv.FormatFloat(in.bytes(vr.size), 'f', 1, 64)
		if in.flops > 0 {
			cv.Flops = strconv.FormatFloat(in.flops, 'f', 1, 64)
		}
		iv.Cases = append(iv.Cases, cv)
	}
	return iv
}

// identifier turns a block id into CamelCase: skiplayernorm.0 -> Skiplayernorm0.
func identifier(id string) string {
	var b strings.Builder
	up := true
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z':
			if up {
				c -= 'a' - 'A'
			}
			b.WriteRune(c)
			up = false
		case c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			b.WriteRune(c)
			up = false
		default:
			up = true
		}
	}
	return b.String()
}

// wrapList lays out head + items joined by ", " + tail on one line when it
// fits in lineWidth, else packs the items greedily into lines, continuation
// lines aligned with the first item (or, when head is long, starting on a
// line of their own indented 4 past head's indentation).
func wrapList(head string, items []string, tail string) string {
	one := head + strings.Join(items, ", ") + tail
	if len(one) <= lineWidth {
		return one
	}
	indent := strings.Repeat(" ", len(head))
	if len(head) > lineWidth/2 {
		lead := len(head) - len(strings.TrimLeft(head, " "))
		indent = strings.Repeat(" ", lead+4)
	}
	var lines []string
	cur := head
	first := true
	for i, it := range items {
		piece := it
		if i < len(items)-1 {
			piece += ","
		} else {
			piece += tail
		}
		switch {
		case first && len(head) > lineWidth/2:
			lines = append(lines, strings.TrimRight(cur, " "))
			cur = indent + piece
		case first:
			cur += piece
		case len(cur)+1+len(piece) <= lineWidth:
			cur += " " + piece
		default:
			lines = append(lines, cur)
			cur = indent + piece
		}
		first = false
	}
	lines = append(lines, cur)
	return strings.Join(lines, "\n")
}

// wrapText splits s into lines of at most width bytes at spaces (a longer
// word gets a line of its own).
func wrapText(s string, width int) []string {
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		switch {
		case cur == "":
			cur = w
		case len(cur)+1+len(w) <= width:
			cur += " " + w
		default:
			lines = append(lines, cur)
			cur = w
		}
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return lines
}
