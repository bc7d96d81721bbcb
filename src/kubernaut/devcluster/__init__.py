"""The local control plane (real etcd + kube-apiserver) and the Tekton stand-in, for dev and tests."""
