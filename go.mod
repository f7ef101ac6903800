module github.com/qcc-dev/qcc

go 1.26.8

require google.golang.org/protobuf v1.36.12

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/yalue/onnxruntime_go v1.27.0 // indirect
)
