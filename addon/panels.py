"""The sidebar tab "ToonSplat" in the 3D Viewport: one panel per step."""

from __future__ import annotations

import bpy

from . import importer, jobs, proportions


class TOONSPLAT_UL_expressions(bpy.types.UIList):
    """The expression shape keys of an avatar: Basis, the Proportions dial (drawn above the list)
    and the driven proportion correctives are left out."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0):
        row = layout.row(align=True)
        row.prop(item, "name", text="", emboss=False, icon="SHAPEKEY_DATA")
        row.prop(item, "value", text="", emboss=False)

    def filter_items(self, context, data, propname):
        blocks = getattr(data, propname)
        names = [block.name for block in blocks]
        shown = set(proportions.expression_key_names(names))
        flags = [self.bitflag_filter_item if name in shown else 0 for name in names]
        if self.filter_name:
            pattern = self.filter_name.lower()
            flags = [f if pattern in name.lower() else 0 for f, name in zip(flags, names)]
        return flags, []


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ToonSplat"


class TOONSPLAT_PT_video(_Panel, bpy.types.Panel):
    bl_label = "1. Video"

    def draw(self, context):
        settings = context.scene.toonsplat
        column = self.layout.column()
        column.prop(settings, "video_path")
        row = column.row(align=True)
        row.prop(settings, "frame_start")
        row.prop(settings, "frame_end")
        row.prop(settings, "frame_stride")
        column.prop(settings, "size")
        column.prop(settings, "refine_tracking")
        column.prop(settings, "eye_contact")
        run = jobs.active("pipeline")
        row = self.layout.row()
        row.enabled = run is None or run.state.finished
        row.operator("toonsplat.check_tracking", icon="VIEWZOOM")
        if run is not None and run.state.title == "Check tracking":
            jobs.draw_run(self.layout, "pipeline", show_preview=True)


class TOONSPLAT_PT_style(_Panel, bpy.types.Panel):
    bl_label = "2. Style"

    def draw(self, context):
        settings = context.scene.toonsplat
        column = self.layout.column()
        column.prop(settings, "style")
        if settings.style != "none":
            column.prop(settings, "style_strength")
        path = {"exemplar": "exemplar_path", "model": "style_model_path",
                "folder": "stylized_folder"}.get(settings.style)
        if path:
            column.prop(settings, path)
        column.separator()
        column.prop(settings, "proportions")
        if settings.proportions != "none":
            column.prop(settings, "proportions_strength", text="Strength")


class TOONSPLAT_PT_train(_Panel, bpy.types.Panel):
    bl_label = "3. Train"

    def draw(self, context):
        settings = context.scene.toonsplat
        column = self.layout.column()
        column.prop(settings, "preset")
        column.prop(settings, "iterations")
        column.prop(settings, "device")


class TOONSPLAT_PT_run(_Panel, bpy.types.Panel):
    bl_label = "4. Run"

    def draw(self, context):
        settings = context.scene.toonsplat
        column = self.layout.column()
        column.prop(settings, "job_name")
        column.prop(settings, "import_when_done")
        run = jobs.active("pipeline")
        column.enabled = run is None or run.state.finished
        self.layout.operator("toonsplat.run_pipeline", icon="PLAY")
        jobs.draw_run(self.layout, "pipeline", show_preview=True)


class TOONSPLAT_PT_avatar(_Panel, bpy.types.Panel):
    bl_label = "5. Avatar"

    def draw(self, context):
        settings = context.scene.toonsplat
        layout = self.layout
        layout.prop(settings, "splat_preview")
        layout.operator("toonsplat.import_avatar", icon="IMPORT")
        row = layout.row(align=True)
        row.prop(settings, "start_frame")
        row.operator("toonsplat.apply_tracking", icon="ACTION")
        obj = context.active_object
        if obj is None or importer.ROLE_PROP not in obj:
            layout.label(text="Select an avatar for its expression sliders", icon="INFO")
            return
        try:
            points, _, _ = importer.find_avatar(obj)
        except importer.ToonSplatError as exc:
            layout.label(text=str(exc)[:80], icon="ERROR")
            return
        keys = points.data.shape_keys
        dial = keys.key_blocks.get(proportions.PROPORTIONS_KEY)
        if dial is not None:  # 0: the face as filmed, 1: the toon proportions it was built with
            layout.prop(dial, "value", text=f"Proportions ({points.get(importer.PROPORTIONS_PROP, '')})",
                        slider=True)
        layout.label(text=f"Expressions of {points.name}")
        layout.template_list("TOONSPLAT_UL_expressions", "toonsplat", keys, "key_blocks",
                             points, "active_shape_key_index", rows=8)
        layout.operator("toonsplat.reset_expressions", icon="LOOP_BACK")


class TOONSPLAT_PT_export(_Panel, bpy.types.Panel):
    bl_label = "6. Export"

    def draw(self, context):
        settings = context.scene.toonsplat
        column = self.layout.column()
        column.prop(settings, "avatar_path")
        column.prop(settings, "export_format")
        if settings.export_format == "video":
            column.prop(settings, "tracking_path")
        column.prop(settings, "export_path")
        column.operator("toonsplat.export", icon="EXPORT")
        jobs.draw_run(column, "export")


classes = (TOONSPLAT_UL_expressions, TOONSPLAT_PT_video, TOONSPLAT_PT_style, TOONSPLAT_PT_train,
           TOONSPLAT_PT_run, TOONSPLAT_PT_avatar, TOONSPLAT_PT_export)
