package portlayer

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoClassifiedErrorText: no non-test file under internal/portlayer
// makes a classified error as text, fmt.Errorf with an errdefs sentinel
// among its arguments ("...: %w", errdefs.ErrInvalidArgument). A
// classified error crosses the layer as a *Error (Errorf, Invalid,
// Refused, …), so a front end reads its class and fields instead of
// parsing its text (the issue "errors cross a layer as typed values,
// never as text that the layer above parses").
func TestNoClassifiedErrorText(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !isSelector(call.Fun, "fmt", "Errorf") {
				return true
			}
			for _, a := range call.Args {
				if sel, ok := a.(*ast.SelectorExpr); ok && isIdent(sel.X, "errdefs") && strings.HasPrefix(sel.Sel.Name, "Err") {
					t.Errorf("%s: fmt.Errorf with errdefs.%s: make a *portlayer.Error (portlayer.Errorf) instead", fset.Position(call.Pos()), sel.Sel.Name)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// isSelector reports whether e is pkg.name.
func isSelector(e ast.Expr, pkg, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == name && isIdent(sel.X, pkg)
}

// isIdent reports whether e is the identifier name.
func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}
