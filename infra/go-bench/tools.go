//go:build tools

// Load generators for bench/, in their own module so their dependencies never move the versions
// the stack's tools (infra/go-tools) are built with.
package tools

import (
	_ "github.com/bojand/ghz/cmd/ghz"
)
