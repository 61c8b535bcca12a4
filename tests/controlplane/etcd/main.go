// Command etcd is the etcd server at the version Kubernetes selects.
//
// etcd's own server module carries replace directives, so it cannot be
// installed with `go install`; building this one-line main inside our module
// uses the versions pinned by go.mod instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
