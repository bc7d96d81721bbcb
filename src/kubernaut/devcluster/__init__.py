"""Dev-only code for `kubernaut dev up` and the tests: the local control plane (real etcd +
kube-apiserver), the Tekton stand-in, the loopback admission webhook and the demo story."""
