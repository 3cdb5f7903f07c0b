//! Real kube-apiserver + etcd for tests.
