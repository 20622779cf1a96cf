// Command io360-metrics-adapter serves the custom metrics API (custom.metrics.k8s.io) for
// pods from a Prometheus server, so HorizontalPodAutoscalers can scale io360's tiers on the
// metrics the tiers export: longpoll on held connections, any tier on requests in flight.
//
// It does for the cluster tests what prometheus-adapter does in a cluster, on the same
// library (sigs.k8s.io/custom-metrics-apiserver), with one rule: a pod's value of a metric is
// the sum of the metric's series scraped from that pod, as prometheus-adapter's
// `sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)` gives. Prometheus must label
// each series with the pod's `namespace` and `pod`.
//
// A pod with no fresh series has no value; when Prometheus cannot be queried, every read
// fails, so an autoscaler reports that it cannot read its metric and keeps its replicas.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/component-base/logs"
	"k8s.io/klog/v2"
	"k8s.io/metrics/pkg/apis/custom_metrics"

	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider/helpers"
)

// pods is the one resource the adapter describes.
var pods = schema.GroupResource{Resource: "pods"}

// metricName is what a Prometheus metric name may be (and so all this adapter will put in a
// query).
var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

type adapter struct {
	basecmd.AdapterBase

	prometheus string
	metrics    []string
	timeout    time.Duration
}

type promProvider struct {
	client     dynamic.Interface
	mapper     apimeta.RESTMapper
	prometheus string
	metrics    []string
	http       *http.Client
}

func (p *promProvider) serves(info provider.CustomMetricInfo) bool {
	if info.GroupResource != pods || !info.Namespaced {
		return false
	}
	for _, m := range p.metrics {
		if m == info.Metric {
			return true
		}
	}
	return false
}

// ListAllMetrics lists every configured metric, for pods.
func (p *promProvider) ListAllMetrics() []provider.CustomMetricInfo {
	infos := make([]provider.CustomMetricInfo, 0, len(p.metrics))
	for _, m := range p.metrics {
		infos = append(infos, provider.CustomMetricInfo{GroupResource: pods, Namespaced: true, Metric: m})
	}
	return infos
}

// promAnswer is the part of Prometheus's `/api/v1/query` answer the adapter reads.
type promAnswer struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// sample is a pod's value of a metric and when Prometheus evaluated it.
type sample struct {
	value float64
	at    time.Time
}

// query asks Prometheus for each named pod's sum of `metric` in `namespace`.
func (p *promProvider) query(ctx context.Context, metric, namespace string, names []string) (map[string]sample, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	q := fmt.Sprintf(`sum by (pod) (%s{namespace=%q,pod=~%q})`, metric, namespace, strings.Join(quoted, "|"))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		p.prometheus+"/api/v1/query?"+url.Values{"query": {q}}.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("querying Prometheus: %w", err)
	}
	defer resp.Body.Close()
	var answer promAnswer
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 8<<20)).Decode(&answer); err != nil {
		return nil, fmt.Errorf("reading Prometheus's answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if answer.Status != "success" || answer.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus answered %q (%s) to %s", answer.Status, answer.Error, q)
	}
	out := make(map[string]sample, len(answer.Data.Result))
	for _, r := range answer.Data.Result {
		seconds, ok := r.Value[0].(float64)
		text, ok2 := r.Value[1].(string)
		if !ok || !ok2 {
			return nil, fmt.Errorf("prometheus answered a sample without time and value for %v", r.Metric)
		}
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("prometheus answered the value %q for %v", text, r.Metric)
		}
		at := time.Unix(0, int64(seconds*1e9))
		out[r.Metric["pod"]] = sample{value: v, at: at}
	}
	return out, nil
}

func (p *promProvider) value(name types.NamespacedName, info provider.CustomMetricInfo, metricSelector labels.Selector, s sample) (custom_metrics.MetricValue, error) {
	ref, err := helpers.ReferenceFor(p.mapper, name, info)
	if err != nil {
		return custom_metrics.MetricValue{}, err
	}
	v := custom_metrics.MetricValue{
		DescribedObject: ref,
		Metric:          custom_metrics.MetricIdentifier{Name: info.Metric},
		Timestamp:       metav1.NewTime(s.at),
		Value:           *resource.NewMilliQuantity(int64(s.value*1000), resource.DecimalSI),
	}
	if !metricSelector.Empty() {
		sel, err := metav1.ParseToLabelSelector(metricSelector.String())
		if err != nil {
			return custom_metrics.MetricValue{}, err
		}
		v.Metric.Selector = sel
	}
	return v, nil
}

// GetMetricByName answers one pod's value.
func (p *promProvider) GetMetricByName(ctx context.Context, name types.NamespacedName, info provider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	if !p.serves(info) {
		return nil, provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	samples, err := p.query(ctx, info.Metric, name.Namespace, []string{name.Name})
	if err != nil {
		return nil, err
	}
	s, ok := samples[name.Name]
	if !ok {
		return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	v, err := p.value(name, info, metricSelector, s)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// GetMetricBySelector answers the value of every pod the selector matches that has one.
func (p *promProvider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValueList, error) {
	if !p.serves(info) {
		return nil, provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	names, err := helpers.ListObjectNames(p.mapper, p.client, namespace, selector, info)
	if err != nil {
		return nil, err
	}
	list := &custom_metrics.MetricValueList{}
	if len(names) == 0 {
		return list, nil
	}
	samples, err := p.query(ctx, info.Metric, namespace, names)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		s, ok := samples[n]
		if !ok {
			continue
		}
		v, err := p.value(types.NamespacedName{Namespace: namespace, Name: n}, info, metricSelector, s)
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, v)
	}
	if len(list.Items) == 0 {
		return nil, provider.NewMetricNotFoundForSelectorError(info.GroupResource, info.Metric, "", selector)
	}
	return list, nil
}

func main() {
	logs.InitLogs()
	defer logs.FlushLogs()

	cmd := &adapter{}
	cmd.Name = "io360-metrics-adapter"
	cmd.Flags().StringVar(&cmd.prometheus, "prometheus-url", "", "the Prometheus server to query, e.g. http://127.0.0.1:9090")
	cmd.Flags().StringSliceVar(&cmd.metrics, "metric", nil, "a metric to serve for pods (repeat for more)")
	cmd.Flags().DurationVar(&cmd.timeout, "prometheus-timeout", 5*time.Second, "how long a query to Prometheus may take")
	logs.AddFlags(cmd.Flags())
	if err := cmd.Flags().Parse(os.Args); errors.Is(err, pflag.ErrHelp) {
		return
	} else if err != nil {
		klog.Fatalf("parsing flags: %v", err)
	}
	if cmd.prometheus == "" || len(cmd.metrics) == 0 {
		klog.Fatalf("--prometheus-url and at least one --metric are needed")
	}
	for _, m := range cmd.metrics {
		if !metricName.MatchString(m) {
			klog.Fatalf("--metric %q is not a Prometheus metric name", m)
		}
	}
	client, err := cmd.DynamicClient()
	if err != nil {
		klog.Fatalf("making a client of the API server: %v", err)
	}
	mapper, err := cmd.RESTMapper()
	if err != nil {
		klog.Fatalf("making a REST mapper: %v", err)
	}
	cmd.WithCustomMetrics(&promProvider{
		client:     client,
		mapper:     mapper,
		prometheus: strings.TrimSuffix(cmd.prometheus, "/"),
		metrics:    cmd.metrics,
		http:       &http.Client{Timeout: cmd.timeout},
	})
	klog.Infof("serving %v from %s", cmd.metrics, cmd.prometheus)
	if err := cmd.Run(context.Background()); err != nil {
		klog.Fatalf("running the adapter: %v", err)
	}
}
