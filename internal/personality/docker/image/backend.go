// Package image serves the Engine API v1.50 "Image" group: pull and import
// (POST /images/create), load, list, inspect, remove and tag. Handlers turn
// references into the port layer's form, stream Docker's JSON progress lines
// and render image records as Docker's types; the port layer's image store
// owns the images.
package image

// The routes use all of portlayer.Images: Pull, Import, Load, Get, List,
// Tag, Remove, Save, Push; and, when given, the container list (prune
// spares images containers use).
