"""Dev-only code for `kubernaut dev up` and the tests: the local control plane (real etcd,
kube-apiserver, controller manager, scheduler, kwok as the kubelet), real Tekton, the local bundle
registry and its sample workflows, the loopback admission webhook and the demo story."""
