// Package text prints and parses qcc IR models in the ONNX textual syntax (the syntax of
// onnx.printer and onnx.parser, described in onnx/onnx docs/Syntax.md). Golden tests are
// written in it, so the printer's output is canonical: it depends only on the IR (nodes
// in the graph's stable order, attributes and metadata in their stored order), and
// Print(Parse(Print(m))) == Print(m).
//
// A model prints as
//
//	<
//	  ir_version: 8,
//	  opset_import: ["" : 13, "com.microsoft" : 1],
//	  producer_name: "pytorch"
//	>
//	main_graph (float[batch,seq,64] x, int64[2] "onnx::Reshape_1") => (float[batch,seq,64] y) <
//	  float[64] w = {... sha256=0123456789abcdef min=-0.1 max=0.1},
//	  int64[1] axes = {0},
//	  float[batch,seq,64] t
//	> {
//	  ["/layer.0/Add"] t = Add (x, w)
//	  y, "" = com.microsoft.Op:overload <axis = -1, alpha = 1.0, perm: ints = []> (t, "", axes)  #@ metadata_props: ["k": "v"]
//	}
//
// Choices within and beyond Syntax.md:
//
//   - Names. A name that is an identifier ([A-Za-z_][A-Za-z0-9_]*) is written bare,
//     anything else in double quotes ("onnx::MatMul_333", "/encoder/layer.0/Add_output_0",
//     "" for an omitted optional input or output), as Syntax.md's quotable-id allows.
//     Names that would read as a type or a float (float, int64, seq, map, optional,
//     sparse_tensor, opaque, inf, nan, ...) are quoted too. Node domains that are not
//     dotted identifiers, op types and attribute names are quoted the same way (an
//     extension: ONNX's parser only reads identifiers there).
//   - Strings. \\ and \" escape themselves; newline, tab and carriage return are written
//     \n \t \r and other control bytes and invalid UTF-8 bytes as \xHH, so every string
//     stays on one line. ONNX's parser would read \n as "n"; this package decodes it.
//   - Node names are the node label of Syntax.md: "[name]" before the outputs.
//   - Node metadata_props, which Syntax.md has no place for, follow the node on its line
//     as "#@ metadata_props: [...]". ONNX's parser skips it as a '#' comment; this parser
//     reads it back. Other '#' comments are ignored. Node and attribute doc strings, value
//     denotations, model functions and sparse initializers are not written.
//   - Initializers and value_info are the graph's "<...>" list after the outputs, one per
//     line: "type name = data" for an initializer, "type name" for a value_info entry. An
//     initializer that is also a graph input (older models) is written in the input list
//     with its data, as Syntax.md allows.
//   - Attributes are written without type annotations where the value shows the type
//     (floats always carry a '.' or an exponent: "alpha = 1.0"); empty lists and
//     references carry one ("perms: ints = []", "axis: int = @axis"). Attributes that
//     hold a graph are written after the inputs, as ONNX's printer does; subgraphs are
//     written inline and indented.
//   - Types: "float" is a scalar, "float[]" a tensor of unknown rank, "?" an unknown
//     dimension, seq(...), map(k, v), optional(...), sparse_tensor(...), opaque(...).
//   - Tensor data. Float and double values use the shortest decimal that reads back to
//     the same bits (strconv 'g', -1), with inf, -inf, nan and -nan (NaN payloads are not
//     kept). float16 and bfloat16 values are written as the shortest such decimal in float
//     form; an integer there is read as the bit pattern, as ONNX's printer writes them.
//     float8/float4 types are written as their bit patterns, sub-byte integers unpacked,
//     complex values as real, imaginary pairs, bool as 0/1.
//   - Abbreviation. A tensor with more than Options.MaxElems elements (default 16) prints
//     as "{... sha256=<first 8 bytes of the SHA-256 of its little-endian bytes, hex>
//     min=<min> max=<max>}" (range over real numeric types, NaNs ignored, floats to 4
//     significant digits); data that cannot be read prints as
//     {... external="location" offset=N length=N} or {... unreadable}. The parser reads an abbreviated tensor back with the declared
//     type and shape and zero-filled data, and remembers the summary so that printing it
//     again gives the same text (until the data is replaced).
//
// Parse errors carry "line:col:" and say what was expected; node inputs may refer to
// values defined later in the same graph or in enclosing graphs, and an undefined name is
// an error naming it. Domains need not be known: the opset imports say which exist.
package text
