//go:build tools

// Package tools pins the SeaweedFS command so `go build` can build it from this wrapper module.
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
