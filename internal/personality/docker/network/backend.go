// Package network serves the Engine API v1.50 "Network" group: list,
// inspect, create, remove and prune networks, and connect or disconnect a
// container. Handlers decode Docker's requests, apply dockerd's validation
// and texts (predefined names, IPAM checks, filters, "network x not found"),
// and render port-layer records as Docker's types.
//
// It owns Docker's network semantics only. The port layer owns the networks
// (addresses, bridges, endpoints) through portlayer.Networks, and the
// containers' attachments through portlayer.NetworkConnector; this package
// keeps no state.
package network

// The routes use these port-layer methods:
//
//   - portlayer.Networks: all of it (CreateNetwork, InspectNetwork,
//     ListNetworks, RemoveNetwork).
//   - portlayer.NetworkConnector: Connect and Disconnect; when it is nil,
//     the connect and disconnect routes answer 501.
