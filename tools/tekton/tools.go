//go:build tools

// Package tools pins Tekton's commands so that `go mod tidy` keeps their dependencies.
package tools

import (
	_ "github.com/tektoncd/pipeline/cmd/controller"
	_ "github.com/tektoncd/pipeline/cmd/resolvers"
)
