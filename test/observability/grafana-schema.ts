/**
 * A strict schema of Grafana's classic dashboard JSON model (schemaVersion 39) and of Grafana's provisioning
 * files, for the fields the generator emits — unknown keys are errors at every level.
 *
 * Written from Grafana's published dashboard schema (grafana/grafana kinds/dashboard, as exported to JSON
 * Schema by grafana-foundation-sdk `jsonschema/dashboard.jsonschema.json`, with the panel plugins'
 * `timeseries`, `stat` and `table` option schemas and the Prometheus `dataquery` schema): the same required
 * fields, enums and bounds (gridPos w ≤ 24, x < 24, h > 0). One documented difference: a threshold's first
 * step has `value: null` (−Infinity), which is what Grafana itself writes although that JSON Schema types it
 * as a number. No Grafana server runs offline here, so this schema is the check.
 */
import { z } from "zod";

const DataSourceRef = z.strictObject({ type: z.string().min(1), uid: z.string().min(1) });

const GridPos = z.strictObject({
  h: z.number().int().gt(0),
  w: z.number().int().gt(0).lte(24),
  x: z.number().int().gte(0).lt(24),
  y: z.number().int().gte(0),
});

const DataQuery = z.strictObject({
  refId: z.string().regex(/^[A-Z]$/),
  expr: z.string().min(1),
  legendFormat: z.string(),
  range: z.boolean(),
  instant: z.boolean(),
  format: z.enum(["time_series", "table", "heatmap"]).optional(),
  editorMode: z.enum(["code", "builder"]),
  datasource: DataSourceRef,
});

const Threshold = z.strictObject({ color: z.string().min(1), value: z.number().nullable() });

const FieldConfigDefaults = z.strictObject({
  unit: z.string().min(1).optional(),
  decimals: z.number().optional(),
  min: z.number().optional(),
  max: z.number().optional(),
  color: z.strictObject({ mode: z.enum(["thresholds", "palette-classic", "fixed", "shades"]) }).optional(),
  thresholds: z
    .strictObject({ mode: z.enum(["absolute", "percentage"]), steps: z.array(Threshold).min(1) })
    .refine((t) => t.steps[0]!.value === null && t.steps.slice(1).every((s) => s.value !== null), {
      message: "the first threshold step is the base (value null), the others have values",
    })
    .optional(),
  custom: z.record(z.string(), z.unknown()).optional(),
});

const GraphFieldConfig = z.strictObject({
  drawStyle: z.enum(["line", "bars", "points"]),
  lineWidth: z.number(),
  fillOpacity: z.number().min(0).max(100),
  showPoints: z.enum(["auto", "never", "always"]),
  spanNulls: z.union([z.boolean(), z.number()]),
  stacking: z.strictObject({ mode: z.enum(["none", "normal", "percent"]), group: z.string() }),
});

const TableFieldOptions = z.strictObject({
  align: z.enum(["auto", "left", "right", "center"]),
  inspect: z.boolean(),
  cellOptions: z.strictObject({ type: z.literal("auto") }),
});

const TimeseriesOptions = z.strictObject({
  legend: z.strictObject({
    displayMode: z.enum(["list", "table", "hidden"]),
    placement: z.enum(["bottom", "right"]),
    showLegend: z.boolean(),
    calcs: z.array(z.string()),
  }),
  tooltip: z.strictObject({
    mode: z.enum(["single", "multi", "none"]),
    sort: z.enum(["asc", "desc", "none"]),
  }),
});

const StatOptions = z.strictObject({
  reduceOptions: z.strictObject({
    calcs: z.array(z.string()).min(1),
    fields: z.string(),
    values: z.boolean(),
  }),
  orientation: z.enum(["auto", "vertical", "horizontal"]),
  textMode: z.enum(["auto", "value", "value_and_name", "name", "none"]),
  colorMode: z.enum(["value", "background", "background_solid", "none"]),
  graphMode: z.enum(["none", "line", "area"]),
  justifyMode: z.enum(["auto", "center"]),
  wideLayout: z.boolean(),
  showPercentChange: z.boolean(),
  percentChangeColorMode: z.enum(["standard", "inverted", "same_as_value"]),
});

const TableOptions = z.strictObject({
  showHeader: z.boolean(),
  frameIndex: z.number(),
  cellHeight: z.enum(["sm", "md", "lg", "auto"]),
});

const Transformation = z.strictObject({ id: z.string().min(1), options: z.record(z.string(), z.unknown()) });

const panelBase = {
  id: z.number().int().positive(),
  title: z.string().min(1),
  description: z.string().min(1).optional(),
  gridPos: GridPos,
  datasource: DataSourceRef,
  targets: z.array(DataQuery).min(1),
};

const fieldConfig = (custom: z.ZodType | null) =>
  z.strictObject({
    defaults: FieldConfigDefaults.extend({ custom: custom === null ? z.never().optional() : custom }),
    overrides: z.array(z.never()),
  });

const TimeseriesPanel = z.strictObject({
  ...panelBase,
  type: z.literal("timeseries"),
  fieldConfig: fieldConfig(GraphFieldConfig),
  options: TimeseriesOptions,
});

const StatPanel = z.strictObject({
  ...panelBase,
  type: z.literal("stat"),
  fieldConfig: fieldConfig(null),
  options: StatOptions,
});

const TablePanel = z.strictObject({
  ...panelBase,
  type: z.literal("table"),
  fieldConfig: fieldConfig(TableFieldOptions),
  options: TableOptions,
  transformations: z.array(Transformation),
});

const RowPanel = z.strictObject({
  id: z.number().int().positive(),
  type: z.literal("row"),
  title: z.string().min(1),
  collapsed: z.boolean(),
  gridPos: GridPos,
  panels: z.array(z.never()),
});

const DashboardLink = z.strictObject({
  title: z.string(),
  type: z.enum(["link", "dashboards"]),
  icon: z.string(),
  tooltip: z.string(),
  tags: z.array(z.string()),
  asDropdown: z.boolean(),
  targetBlank: z.boolean(),
  includeVars: z.boolean(),
  keepTime: z.boolean(),
});

const AnnotationQuery = z.strictObject({
  builtIn: z.number(),
  datasource: DataSourceRef,
  enable: z.boolean(),
  hide: z.boolean(),
  iconColor: z.string(),
  name: z.string(),
  type: z.string(),
});

const VariableModel = z.strictObject({
  type: z.enum(["query", "adhoc", "constant", "datasource", "interval", "textbox", "custom", "system"]),
  name: z.string().regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/),
  label: z.string(),
  query: z.string(),
  current: z.strictObject({ text: z.string(), value: z.string() }),
  hide: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  refresh: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  regex: z.string(),
  includeAll: z.boolean(),
  multi: z.boolean(),
  options: z.array(z.never()),
  skipUrlSync: z.boolean(),
});

export const DashboardSchema = z.strictObject({
  uid: z.string().regex(/^[a-zA-Z0-9_-]{1,40}$/),
  title: z.string().min(1),
  description: z.string(),
  tags: z.array(z.string()),
  timezone: z.string(),
  editable: z.boolean(),
  graphTooltip: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  time: z.strictObject({ from: z.string(), to: z.string() }),
  refresh: z.union([z.string(), z.literal(false)]),
  schemaVersion: z.number().int(),
  version: z.number().int(),
  links: z.array(DashboardLink),
  annotations: z.strictObject({ list: z.array(AnnotationQuery) }),
  templating: z.strictObject({ list: z.array(VariableModel) }),
  panels: z.array(z.discriminatedUnion("type", [TimeseriesPanel, StatPanel, TablePanel, RowPanel])),
});

/** Grafana's datasource provisioning file (administration/provisioning, "Data sources"). */
export const DatasourceProvisioningSchema = z.strictObject({
  apiVersion: z.literal(1),
  datasources: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        uid: z.string().regex(/^[a-zA-Z0-9_-]{1,40}$/),
        type: z.enum(["prometheus", "tempo", "jaeger"]),
        access: z.enum(["proxy", "direct"]),
        url: z.url(),
        isDefault: z.boolean(),
        editable: z.boolean(),
        jsonData: z.record(z.string(), z.unknown()),
      }),
    )
    .min(1)
    .refine((ds) => ds.filter((d) => d.isDefault).length === 1, {
      message: "exactly one default datasource",
    }),
});

/** Grafana's dashboard provider file (administration/provisioning, "Dashboards"). */
export const DashboardProvisioningSchema = z.strictObject({
  apiVersion: z.literal(1),
  providers: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        orgId: z.number().int().positive(),
        folder: z.string(),
        type: z.literal("file"),
        disableDeletion: z.boolean(),
        allowUiUpdates: z.boolean(),
        updateIntervalSeconds: z.number().int().positive(),
        options: z.strictObject({ path: z.string().startsWith("/"), foldersFromFilesStructure: z.boolean() }),
      }),
    )
    .min(1),
});
